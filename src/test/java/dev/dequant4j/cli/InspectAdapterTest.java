package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class InspectAdapterTest {
    private final StringWriter out = new StringWriter();
    private final StringWriter err = new StringWriter();

    private int run(String... args) {
        return Main.run(args, new PrintWriter(out), new PrintWriter(err));
    }

    @Test
    void tableShowsPerModuleRankAlphaScalingAndDora() {
        assertEquals(0, run("inspect", Fixtures.adapter("h64-pattern-bf16").toString()));
        String text = out.toString();
        assertTrue(text.contains("default:   r=8, lora_alpha=16, scaling=2.0 (alpha/r)"), text);
        assertTrue(text.contains("rank_pattern:  {model.layers.1.mlp.down_proj: 12, q_proj: 4}"), text);
        assertTrue(text.matches("(?s).*model\\.layers\\.1\\.mlp\\.down_proj\\.weight +LINEAR +12 +16 +1\\.3333334 +- +BF16.*"),
                text);
        assertTrue(text.matches("(?s).*model\\.layers\\.0\\.mlp\\.gate_proj\\.weight +LINEAR +8 +4 +0\\.5 .*"), text);
    }

    @Test
    void jsonListsModules() {
        assertEquals(0, run("inspect", "--json", Fixtures.adapter("h64-dora-qv").toString()));
        JsonObject o = Json.parseObject(out.toString().getBytes());
        assertEquals(true, o.getBoolean("use_dora", false));
        assertEquals(4, o.getArray("modules").size());
        JsonObject m = (JsonObject) o.getArray("modules").get(0);
        assertEquals("model.layers.0.self_attn.q_proj.weight", m.getString("tensor"));
        assertEquals(2.0, m.getDouble("scaling"));
        assertEquals(true, m.getBoolean("dora", false));
    }

    @Test
    void brokenAdapterIsAOneLineError(@TempDir Path tmp) throws Exception {
        Path dir = Files.createDirectories(tmp.resolve("a"));
        Files.writeString(dir.resolve("adapter_config.json"), "{\"peft_type\": \"LORA\", \"r\": 8}");
        Files.copy(Fixtures.adapter("h64-lora-r8").resolve("adapter_model.safetensors"),
                dir.resolve("adapter_model.safetensors"));
        assertEquals(1, run("inspect", dir.toString()));
        assertEquals("error: " + dir.resolve("adapter_config.json") + ": missing field 'lora_alpha'",
                err.toString().strip());
    }
}
