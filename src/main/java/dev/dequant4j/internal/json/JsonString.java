package dev.dequant4j.internal.json;

public record JsonString(String value) implements JsonValue {
    @Override
    public String typeName() {
        return "string";
    }

    @Override
    public Object toJava() {
        return value;
    }
}
