package dev.dequant4j.internal.lora;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.internal.json.Json;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/** PEFT's rank_pattern / alpha_pattern matching and the Python-to-Java regex translation. */
class PatternTest {
    private static boolean peftMatch(String key, String module) {
        return PythonRegex.suffixPattern(key).matcher(module).lookingAt();
    }

    @Test
    void keyMatchesTheWholeNameOrADottedSuffix() {
        assertTrue(peftMatch("q_proj", "model.layers.0.self_attn.q_proj"));
        assertTrue(peftMatch("q_proj", "q_proj"));
        assertFalse(peftMatch("q_proj", "model.layers.0.self_attn.xq_proj"));
        assertFalse(peftMatch("q_proj", "model.layers.0.self_attn.q_proj_x"));
        assertTrue(peftMatch("layers\\.0\\.mlp\\.(gate|up)_proj", "model.layers.0.mlp.up_proj"));
        assertFalse(peftMatch("layers\\.0\\.mlp\\.(gate|up)_proj", "model.layers.10.mlp.up_proj"));
        assertFalse(peftMatch("layers\\.0\\.mlp\\.(gate|up)_proj", "model.layers.0.mlp.down_proj"));
        // alternation is grouped by PEFT's ({key}), so it cannot escape the anchors
        assertFalse(peftMatch("q_proj|v", "model.layers.0.self_attn.v_proj"));
        assertTrue(peftMatch("model.layers.1.mlp.down_proj", "model.layers.1.mlp.down_proj"));
        assertTrue(peftMatch("^model.decoder.layers.0.encoder_attn.k_proj", "model.decoder.layers.0.encoder_attn.k_proj"));
    }

    /**
     * Python's {@code .} stops only at {@code \n}, and its {@code $} matches before a final {@code \n}; Java's
     * stopped at CR, U+0085, U+2028 and U+2029 too. Expected: CPython 3's {@code re.match(r"(.*\.)?(KEY)$", NAME)}.
     */
    @Test
    void dotAndDollarKnowOnlyNewlineAsPythonDoes() {
        assertTrue(peftMatch("a.b", "x.a\rb"));
        assertTrue(peftMatch("a.b", "x.a\u0085b"));
        assertTrue(peftMatch("a.b", "x.a\u2028b"));
        assertTrue(peftMatch("a.b", "x.a\u2029b"));
        assertFalse(peftMatch("a.b", "x.a\nb"));
        assertTrue(peftMatch("ab", "x.ab\n"));
        assertFalse(peftMatch("ab", "x.ab\r"));
        assertTrue(PythonRegex.compile("a.b").matcher("a\u2028b").matches());
    }

    /** A tensor key is a name: a module name holding CR or U+2028 is still a LoRA module, as PEFT reads it. */
    @Test
    void adapterKeysWithLineSeparatorsInTheirNamesAreParsed() {
        for (String sep : List.of("\r", "\n", "\u0085", "\u2028", "\u2029")) {
            AdapterKey k = AdapterKey.parse("base_model.model.model.a" + sep + "b.q_proj.lora_A.weight", false, false);
            assertEquals(AdapterKey.Role.LORA_A, k.role(), sep);
            assertEquals("model.a" + sep + "b.q_proj", k.module());
        }
    }

    @Test
    void firstMatchingKeyInFileOrderWins() {
        AdapterConfig c = AdapterConfig.parse(Path.of("adapter_config.json"), Json.parseObject(("""
                {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                 "rank_pattern": {"q_proj": 4, "model.layers.0.self_attn.q_proj": 12},
                 "alpha_pattern": {"layers\\\\.0\\\\..*": 3, "q_proj": 5.5}}""").getBytes()));
        assertEquals(4, c.rFor("model.layers.0.self_attn.q_proj"));
        assertEquals(8, c.rFor("model.layers.0.self_attn.k_proj"));
        assertEquals(3.0, c.alphaFor("model.layers.0.self_attn.q_proj"));
        assertEquals(5.5, c.alphaFor("model.layers.1.self_attn.q_proj"));
        assertEquals(16.0, c.alphaFor("model.layers.1.self_attn.k_proj"));
    }

    @Test
    void pythonOnlySyntaxIsTranslated() {
        Pattern named = PythonRegex.compile("(?P<a_b>x|y)\\.(?P=a_b)");
        assertTrue(named.matcher("x.x").matches());
        assertFalse(named.matcher("x.y").matches());
        assertTrue(PythonRegex.compile("a{b").matcher("a{b").matches());
        assertTrue(PythonRegex.compile("a{,2}").matcher("aa").matches());
        assertTrue(PythonRegex.compile("a{,2}").matcher("").matches());
        assertTrue(PythonRegex.compile("a{,}").matcher("aaa").matches());
        assertTrue(PythonRegex.compile("a{}").matcher("a{}").matches());
        assertTrue(PythonRegex.compile("a{2}").matcher("aa").matches());
        assertTrue(PythonRegex.compile("[[]").matcher("[").matches());
        assertTrue(PythonRegex.compile("[]a]+").matcher("]a]").matches());
        assertTrue(PythonRegex.compile("[a&&b]+").matcher("a&b").matches());
        assertTrue(PythonRegex.compile("\\w+_proj").matcher("é_proj").matches());
        assertFalse(PythonRegex.compile("proj\\Z").matcher("proj\n").find());
        assertTrue(PythonRegex.compile("proj\\Z").matcher("proj").find());
    }

    @Test
    void uncompilablePatternNamesTheKey() {
        Map<String, Object> c = new LinkedHashMap<>(TestFiles.config(8, 16));
        c.put("rank_pattern", Map.of("q_proj(", 4));
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> AdapterConfig.parse(
                Path.of("adapter_config.json"), Json.parseObject(TestFiles.json(c).getBytes())));
        assertTrue(e.detail().startsWith("rank_pattern key 'q_proj(' is not a regular expression"), e.getMessage());
    }
}
