package dev.dequant4j.internal.json;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public record JsonArray(List<JsonValue> values) implements JsonValue {
    public JsonArray {
        values = Collections.unmodifiableList(values);
    }

    public int size() {
        return values.size();
    }

    public JsonValue get(int i) {
        return values.get(i);
    }

    @Override
    public String typeName() {
        return "array";
    }

    @Override
    public Object toJava() {
        List<Object> out = new ArrayList<>(values.size());
        for (JsonValue v : values) {
            out.add(v.toJava());
        }
        return Collections.unmodifiableList(out);
    }
}
