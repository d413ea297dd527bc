package dev.dequant4j.internal.json;

public enum JsonNull implements JsonValue {
    NULL;

    @Override
    public String typeName() {
        return "null";
    }

    @Override
    public Object toJava() {
        return null;
    }
}
