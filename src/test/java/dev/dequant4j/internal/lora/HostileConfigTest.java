package dev.dequant4j.internal.lora;

import static dev.dequant4j.internal.lora.TestFiles.random;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.LoraAdapter;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Hostile {@code adapter_config.json} values (issue 6): numbers out of range, JSON nested 10,000 deep, and
 * {@code rank_pattern}/{@code alpha_pattern} regular expressions built to backtrack for ever or to overflow the
 * regex engine's stack. Each is refused with one line naming the file, within seconds.
 */
class HostileConfigTest {
    @TempDir
    Path tmp;

    private int n;

    /** An adapter for one module with a raw config text (numbers are written exactly as given). */
    private Path adapter(String module, String configJson) throws IOException {
        Path dir = TestFiles.adapter(tmp.resolve("a" + n++), TestFiles.config(2, 4), List.of(
                random(module + ".lora_A.weight", DType.F32, new long[] {2, 3}, 1, 1),
                random(module + ".lora_B.weight", DType.F32, new long[] {4, 2}, 2, 1)));
        Files.writeString(dir.resolve("adapter_config.json"), configJson);
        return dir;
    }

    private static String config(String more) {
        return "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4" + more + "}";
    }

    /** The one-line message of opening {@code dir}, which must fail within ten seconds. */
    private static String refusal(Path dir) {
        Dequant4jException e = assertTimeoutPreemptively(Duration.ofSeconds(10),
                () -> assertThrows(Dequant4jException.class, () -> LoraAdapter.open(dir).close()));
        assertEquals(1, e.getMessage().lines().count(), e.getMessage());
        return e.getMessage();
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', quoteCharacter = '`', value = {
        "2|1e999|``|field 'lora_alpha' must be a finite number within the float32 range, not 1e999",
        "2|-1e39|``|field 'lora_alpha' must be a finite number within the float32 range, not -1e39",
        "18446744073709551616|4|``|field 'r' must be an integer, not the number 18446744073709551616",
        "1e3|4|``|field 'r' must be an integer, not the number 1e3",
        "0|4|``|field 'r' must be a positive integer, not 0",
        "4294967296|4|``|field 'r' must be a positive integer, not 4294967296",
        "2|4|`, \"rank_pattern\": {\"q\": 4294967296}`|field 'rank_pattern' must map names to positive integers ('q' does not)",
        "2|4|`, \"alpha_pattern\": {\"q\": 1e999}`|field 'alpha_pattern' must map names to finite numbers within the float32 range ('q' does not)",
        "2|4|`, \"trainable_token_indices\": [18446744073709551616]`|field 'trainable_token_indices' must be a list of non-negative integers",
        "2|4|`, \"trainable_token_indices\": [-1]`|field 'trainable_token_indices' must be a list of non-negative integers",
    })
    void numbersOutOfRange(String r, String alpha, String more, String expected) throws IOException {
        Path dir = adapter("model.q", "{\"peft_type\": \"LORA\", \"r\": " + r + ", \"lora_alpha\": " + alpha + more + "}");
        assertEquals(dir.resolve("adapter_config.json") + ": " + expected, refusal(dir));
    }

    /**
     * The issue: a file that is not JSON, given as adapter_config.json, had its first characters quoted in the
     * error. It may be anything (a key file behind a link inside the directory): nothing of it is quoted.
     */
    @ParameterizedTest
    @CsvSource(delimiter = '|', quoteCharacter = '`', value = {
        "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETb3BlbnNzaC1rZXktdjEAAAAA",
        "SECRET",
        "<html><body>SECRET</body></html>",
        "`  \n\tSECRET = 1`",
        "[\"SECRET\"]",
        "\"SECRET\"",
        "``",
    })
    void aFileThatIsNotJsonIsQuotedNowhere(String text) throws IOException {
        Path dir = adapter("model.q", text);
        assertEquals(dir.resolve("adapter_config.json") + ": invalid JSON: not a JSON object (the file does not start"
                + " with '{')", refusal(dir));
    }

    @Test
    void jsonNestedTenThousandDeep() throws IOException {
        Path dir = adapter("model.q", config(", \"x\": " + "[".repeat(10_000) + "]".repeat(10_000)));
        assertEquals(dir.resolve("adapter_config.json") + ": invalid JSON: JSON nested deeper than 128 levels at byte "
                + (config("").length() - 1 + ", \"x\": ".length() + 127), refusal(dir));
    }

    /**
     * {@code ((a+)+)+} against 30 a's and a mismatch backtracks through exponentially many paths, in Python's re and
     * in Java's (whose loop memo defuses {@code (a+)+} but not this).
     */
    @Test
    void catastrophicBacktrackingPatternIsCutShort() throws IOException {
        String module = "a".repeat(30) + "!";
        Path dir = adapter(module, config(", \"rank_pattern\": {\"((a+)+)+\": 2}"));
        assertEquals(dir.resolve("adapter_config.json") + ": rank_pattern key '((a+)+)+' takes too many steps to match"
                + " module '" + module + "' (a pattern that backtracks exponentially?)", refusal(dir));
    }

    /**
     * Forty empty alternations before {@code \\Z}: the pattern reads no character while its backtracking doubles per
     * group, so a budget of characters read would never run out. The metered pattern reads one per alternative
     * tried: refused, naming the key, within a second.
     */
    @Test
    void backtrackingThatReadsNothingIsCutShortWithinASecond() throws IOException {
        String key = "(|)".repeat(40) + "\\\\Z";
        Path dir = adapter("model.layers.0.q", config(", \"rank_pattern\": {\"" + key + "\": 8}"));
        long t0 = System.nanoTime();
        String message = refusal(dir);
        long millis = (System.nanoTime() - t0) / 1_000_000;
        assertEquals(dir.resolve("adapter_config.json") + ": rank_pattern key '" + "(|)".repeat(33) + "(...' takes"
                + " too many steps to match module 'model.layers.0.q' (a pattern that backtracks exponentially?)",
                message);
        assertTrue(millis < 1000, "refused after " + millis + " ms");
    }

    /** java.util.regex compiles and matches groups recursively: nesting is bounded before the stack is at risk. */
    @Test
    void patternNestedTenThousandDeep() throws IOException {
        String key = "(".repeat(10_000) + "q" + ")".repeat(10_000);
        Path dir = adapter("model.q", config(", \"alpha_pattern\": {\"" + key + "\": 8}"));
        assertEquals(dir.resolve("adapter_config.json") + ": alpha_pattern key '" + key.substring(0, 100) + "...' is"
                + " not a regular expression dequant4j can compile: groups nested deeper than 100",
                refusal(dir));
    }

    /** Java's regex engine recurses once per repetition of a group: a long module name would overflow the stack. */
    @Test
    void groupRepeatedOverALongModuleName() throws IOException {
        String module = "a".repeat(200_000);
        Path dir = adapter(module, config(", \"rank_pattern\": {\"(?:a|b)*\": 2}"));
        assertEquals(dir.resolve("adapter_config.json") + ": rank_pattern key '(?:a|b)*' overflows the regular"
                + " expression engine's stack on module '" + module.substring(0, 40) + "...'", refusal(dir));
    }
}
