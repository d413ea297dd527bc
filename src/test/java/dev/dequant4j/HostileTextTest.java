package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.cli.Main;
import dev.dequant4j.internal.Printable;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.lora.TestFiles;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.logging.Logger;
import java.util.logging.StreamHandler;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Text from files on its way to the terminal (issue 13, classes 5 and 6): every name passes one sanitizer
 * ({@link Printable}) before stdout, stderr, errors and log warnings; JSON output escapes instead; table cells are
 * shortened visibly.
 */
class HostileTextTest {
    /** ESC[2J (clear screen), CR (overwrite the line), ESC[8m (hide), RLO (reverse), ZWSP, LINE SEPARATOR. */
    static final String HOSTILE = "\u001b[2J\r\u001b[8m\u202e\u200b\u2028";
    /** The same, as it must appear: one '?' each. */
    static final String SHOWN = "?[2J??[8m???";
    static final String IN_MODULE = "\u001b[2J\u001b[8m\u202e\u200b";

    @TempDir
    Path tmp;

    record Run(int exit, String out, String err) {}

    private static Run cli(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int exit = Main.run(args, new PrintWriter(out, true), new PrintWriter(err, true));
        return new Run(exit, out.toString(), err.toString());
    }

    private static void assertPrintable(String text) {
        for (String line : text.lines().toList()) {
            assertTrue(line.codePoints().noneMatch(Printable::unsafe), "raw control or format character in: "
                    + line.codePoints().mapToObj(c -> Printable.unsafe(c) ? "<U+" + Integer.toHexString(c) + ">"
                    : Character.toString(c)).reduce("", String::concat));
        }
    }

    @Test
    void theSanitizerCatchesControlBidiAndInvisibleCharacters() {
        assertEquals(SHOWN, Printable.of(HOSTILE));
        assertEquals("a?b?c?d?e", Printable.of("a\u0085b\u2066c\ufeffd\u00ade"));
        assertEquals("tag?", Printable.of("tag" + Character.toString(0xE0041)));
        assertEquals("lone?", Printable.of("lone\ud800"));
        assertEquals("emoji \ud83d\ude00 and \u00e9", Printable.of("emoji \ud83d\ude00 and \u00e9"));
    }

    /** An adapter module whose config r differs from its tensors: the warning names the module. */
    private Path adapterWithHostileModule() {
        // no line breaks (CR, U+2028): PEFT's key names do not span lines
        String module = "model.layers.0.self_attn.q_proj" + RawSafetensorsQuote.inName(IN_MODULE);
        return TestFiles.adapter(tmp.resolve("adapter"), TestFiles.config(8, 16),
                List.of(TestFiles.random(module + ".lora_A.weight", DType.F32, new long[] {4, 8}, 1, 0.1),
                        TestFiles.random(module + ".lora_B.weight", DType.F32, new long[] {8, 4}, 2, 0.1)));
    }

    @Test
    void adapterWarningsAreSanitizedAndJsonEscaped() {
        Path adapter = adapterWithHostileModule();
        Run text = cli("inspect", adapter.toString());
        assertEquals(0, text.exit(), text.err());
        assertTrue(text.out().contains("warning:   module 'model.layers.0.self_attn.q_proj" + "?[2J?[8m??"
                + "'"),
                text.out());
        assertPrintable(text.out());
        Run json = cli("inspect", adapter.toString(), "--json");
        assertEquals(0, json.exit(), json.err());
        assertTrue(json.out().contains("\\u001b[2J\\u001b[8m\\u202e\\u200b"), json.out());
        assertPrintable(json.out());
    }

    @Test
    void errorsNamingAHostileTensorAreSanitized() throws IOException {
        Path f = tmp.resolve("bad.safetensors");
        // two elements in four bytes: refused, naming the tensor
        RawSafetensors.write(f, RawSafetensors.file(RawSafetensors.header(
                RawSafetensors.entry(HOSTILE, "F32", "[2]", 0, 4)), new byte[4]));
        Run r = cli("inspect", f.toString());
        assertEquals(1, r.exit());
        assertEquals(1, r.err().lines().count(), r.err());
        assertTrue(r.err().contains("tensor '" + SHOWN + "'"), r.err());
        assertPrintable(r.err());
    }

    /**
     * A 4-bit weight whose stored quant_map differs from bitsandbytes' table is reported through the library's
     * logger; the CLI's log format sanitizes the weight's name.
     */
    @Test
    void logWarningsAreSanitized() throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("m"));
        Path fixture = Fixtures.checkpoint("llama-h64-nf4");
        Files.copy(fixture.resolve("config.json"), dir.resolve("config.json"));
        byte[] file = Files.readAllBytes(fixture.resolve("model.safetensors"));
        long n = ByteBuffer.wrap(file).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        String header = new String(file, 8, (int) n, StandardCharsets.UTF_8);
        JsonObject h = Json.parseObject(header.getBytes(StandardCharsets.UTF_8));
        long mapBegin = h.getObject("model.layers.0.mlp.down_proj.weight.quant_map").getArray("data_offsets")
                .values().getFirst() instanceof dev.dequant4j.internal.json.JsonNumber num ? num.longValue() : -1;
        byte[] renamed = header.replace("model.layers.0.mlp.down_proj.weight",
                "model.layers.0.mlp.down_proj" + RawSafetensorsQuote.inName(HOSTILE) + ".weight")
                .getBytes(StandardCharsets.UTF_8);
        ByteBuffer out = ByteBuffer.allocate(8 + renamed.length + file.length - 8 - (int) n)
                .order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(renamed.length).put(renamed).put(file, 8 + (int) n, file.length - 8 - (int) n);
        out.putFloat(8 + renamed.length + (int) mapBegin, 0.5f);
        Files.write(dir.resolve("model.safetensors"), out.array());

        ByteArrayOutputStream log = new ByteArrayOutputStream();
        StreamHandler handler = new StreamHandler(log, new java.util.logging.SimpleFormatter());
        Logger root = Logger.getLogger("");
        root.addHandler(handler);
        try {
            Run r = cli("inspect", dir.toString());
            assertEquals(0, r.exit(), r.err());
            assertPrintable(r.out());
        } finally {
            handler.flush();
            root.removeHandler(handler);
        }
        String logged = log.toString(StandardCharsets.UTF_8);
        assertTrue(logged.contains("warning: model.layers.0.mlp.down_proj" + SHOWN + ".weight: stored quant_map"
                + " differs"), logged);
        assertPrintable(logged);
    }

    @Test
    void aMillionCharacterNameIsShortenedInTheTableAndWholeInJson() throws IOException {
        Path f = tmp.resolve("long.safetensors");
        String name = "x".repeat(500_000) + "MIDDLE" + "y".repeat(500_000) + ".end";
        RawSafetensors.write(f, RawSafetensors.file(RawSafetensors.header(
                RawSafetensors.entry(name, "F32", "[1]", 0, 4), RawSafetensors.entry("b", "F32", "[1]", 4, 8)),
                new byte[8]));
        Run text = cli("inspect", f.toString());
        assertEquals(0, text.exit(), text.err());
        assertTrue(text.out().length() < 10_000, "printed " + text.out().length() + " characters");
        String row = text.out().lines().filter(l -> l.startsWith("xxx")).findFirst().orElseThrow();
        assertTrue(row.startsWith("x".repeat(64) + "...") && row.contains("yyy.end  PLAIN"), row);
        String other = text.out().lines().filter(l -> l.startsWith("b ")).findFirst().orElseThrow();
        assertTrue(other.length() < 300, other);
        Run json = cli("inspect", f.toString(), "--json");
        assertEquals(0, json.exit(), json.err());
        assertTrue(json.out().contains(name), "the full name in --json");
    }

    /** A name put into a JSON header as escapes, so the file holds the characters themselves once decoded. */
    static final class RawSafetensorsQuote {
        static String inName(String s) {
            StringBuilder sb = new StringBuilder();
            s.chars().forEach(c -> sb.append(String.format("\\u%04x", c)));
            return sb.toString();
        }
    }
}
