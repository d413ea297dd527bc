package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The hostile inputs of issue 6 that the per-parser corpora (BadFilesTest, ShardIndexTest, BadInputTest, ...) do not
 * already hold, opened the way a user opens them: JSON nested 10,000 deep in a header, a config and an index; a
 * 100 MB string in a header; a header length just past the limit. Each gives its one-line error, quickly, without
 * allocating more than a small multiple of what it read.
 */
class HostileInputTest {
    private static final com.sun.management.ThreadMXBean THREADS =
            (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
    private static final String DEEP = "[".repeat(10_000) + "]".repeat(10_000);

    @TempDir
    Path tmp;

    /**
     * Opening {@code path} fails within 20 s allocating at most {@code maxBytes}; returns the message. The second
     * refusal is the one measured: the first may load and initialize classes (the JSON reader, the exception's
     * formatting), whose allocation depends on which tests ran before and says nothing about the input.
     */
    private static String refusal(Path path, long maxBytes) {
        return assertTimeoutPreemptively(Duration.ofSeconds(20), () -> {
            assertThrows(Dequant4jException.class, () -> Checkpoint.open(path).close());
            long before = THREADS.getCurrentThreadAllocatedBytes();
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> Checkpoint.open(path).close());
            long used = THREADS.getCurrentThreadAllocatedBytes() - before;
            assertTrue(used <= maxBytes, "allocated " + used + " bytes, more than " + maxBytes);
            assertEquals(1, e.getMessage().lines().count(), e.getMessage());
            return e.getMessage();
        });
    }

    private static void writeSafetensors(Path file, String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        Files.write(file, b.putLong(h.length).put(h).array());
    }

    /** A valid one-tensor model directory. */
    private Path model(String name) throws IOException {
        Path dir = Files.createDirectories(tmp.resolve(name));
        writeSafetensors(dir.resolve("model.safetensors"),
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
        return dir;
    }

    @Test
    void headerNestedTenThousandDeep() throws IOException {
        Path f = tmp.resolve("deep.safetensors");
        // inside a key of the tensor entry that the reader skips: the header is level 1, the entry 2, and the
        // seventh bracket opens the ninth level
        String header = "{\"a\":{\"x\":" + DEEP + "}}";
        writeSafetensors(f, header, 0);
        assertEquals(f + ": tensor 'a': invalid header JSON: JSON nested deeper than 8 levels at byte "
                + (8 + header.indexOf('[') + 6), refusal(f, 1 << 20));
    }

    @Test
    void configNestedTenThousandDeep() throws IOException {
        Path dir = model("config");
        Files.writeString(dir.resolve("config.json"), "{\"x\": " + DEEP + "}");
        assertEquals(dir.resolve("config.json") + ": invalid JSON: JSON nested deeper than 128 levels at byte "
                + ("{\"x\": ".length() + 127), refusal(dir, 1 << 20));
    }

    @Test
    void shardIndexNestedTenThousandDeep() throws IOException {
        Path dir = model("index");
        Files.writeString(dir.resolve("model.safetensors.index.json"), "{\"weight_map\": " + DEEP + "}");
        assertEquals(dir.resolve("model.safetensors.index.json") + ": invalid JSON: JSON nested deeper than 128"
                + " levels at byte " + ("{\"weight_map\": ".length() + 127), refusal(dir, 1 << 20));
    }

    /** A sparse file just over the limit: refused from its first eight bytes, none of the rest is read. */
    @Test
    void headerLengthJustOverTheLimit() throws IOException {
        Path f = tmp.resolve("over.safetensors");
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(9).order(ByteOrder.LITTLE_ENDIAN).putLong(100_000_001L).put((byte) '{')
                    .flip());
            ch.write(ByteBuffer.wrap(new byte[] {'}'}), 8 + 100_000_001L);
        }
        assertEquals(f + ": header length 100000001 exceeds the safetensors limit of 100000000 bytes (corrupt or not"
                + " safetensors)", refusal(f, 1 << 20));
    }

    /**
     * A header of almost 100 MB, the limit, that is one string. It is read (the limit allows it), and the error
     * quotes a bounded part of it: the header copy and the decoded string are the only large allocations.
     */
    @Test
    void hundredMegabyteStringAsADtype() throws IOException {
        int n = 99_999_000;
        Path f = tmp.resolve("dtype.safetensors");
        writeLarge(f, "{\"x\":{\"dtype\":\"", n, "\",\"shape\":[],\"data_offsets\":[0,0]}}");
        String m = refusal(f, 4L * Files.size(f));
        assertEquals(f + ": tensor 'x': unknown dtype '" + "A".repeat(40) + "...' (not one of the safetensors dtypes)", m);
    }

    @Test
    void hundredMegabyteTensorName() throws IOException {
        int n = 99_999_000;
        Path f = tmp.resolve("name.safetensors");
        writeLarge(f, "{\"", n, "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}");
        String m = refusal(f, 4L * Files.size(f));
        assertEquals(f + ": tensor '" + "A".repeat(200) + "... (" + (n - 200) + " more characters)': data_offsets"
                + " [0, 8] run past the end of the file (data section is 0 bytes; truncated?)", m);
    }

    /**
     * What FFM does when a mapped file shrinks (the case the readers' size check cannot close: a truncation between
     * the check and the copy, or a caller reading {@link Checkpoint#rawData}): a read of a page past the new end
     * raises SIGBUS, which JDK 25 turns into an InternalError in the reading thread; the JVM does not crash. Reads
     * through the library re-check the size first and give the one-line error.
     */
    @Test
    void readingAMappingWhoseFileWasTruncated() throws IOException {
        Path f = tmp.resolve("shrinks.safetensors");
        int n = 1 << 20;
        writeSafetensors(f, "{\"w\":{\"dtype\":\"F32\",\"shape\":[" + n / 4 + "],\"data_offsets\":[0," + n + "]}}", n);
        long size = Files.size(f);
        try (Checkpoint c = Checkpoint.open(f)) {
            java.lang.foreign.MemorySegment raw = c.rawData("w");
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
                ch.truncate(4096);
            }
            InternalError fault = assertThrows(InternalError.class,
                    () -> raw.get(java.lang.foreign.ValueLayout.JAVA_BYTE, n - 1));
            assertTrue(fault.getMessage().contains("a fault occurred"), fault.getMessage());
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> c.readFloats("w"));
            assertEquals(f + ": tensor 'w': file was truncated after it was opened (4096 bytes now, " + size
                    + " before)", e.getMessage());
        }
    }

    /**
     * A model directory (a cloned repository, say) whose tokenizer file or config.json is a link to a file of the
     * user's: an export would copy it into the output, so it is refused. The hub cache's own links are followed.
     */
    @Test
    void exportCopiesNothingThatLinksOutOfTheModelDirectory() throws IOException {
        Path key = Files.writeString(tmp.resolve("id_ed25519"), "-----BEGIN OPENSSH PRIVATE KEY-----\n");
        Path tokens = model("tokenizer-link");
        Files.createSymbolicLink(tokens.resolve("tokenizer.model"), key);
        Path credentials = Files.writeString(tmp.resolve("docker-config.json"), "{\"auths\": {\"r\": {\"auth\": \"x\"}}}");
        Path config = model("config-link");
        Files.createSymbolicLink(config.resolve("config.json"), credentials);
        for (Path[] c : new Path[][] {{tokens, tokens.resolve("tokenizer.model"), key},
                                      {config, config.resolve("config.json"), credentials}}) {
            Path out = tmp.resolve("out");
            // config.json is refused when the checkpoint is opened, a tokenizer file when the export chooses it
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> {
                try (Checkpoint ckpt = Checkpoint.open(c[0])) {
                    Export.of(ckpt).to(out);
                }
            });
            assertEquals(c[1] + ": is a link that leads out of the directory (to " + c[2].toRealPath()
                    + "); refused", e.getMessage());
            try (Stream<Path> s = Files.list(tmp)) {
                assertTrue(s.noneMatch(p -> p.getFileName().toString().contains("out")), "nothing written");
            }
        }

        // the hub cache: every file of a snapshot is a link into the repository's blobs
        Path repo = tmp.resolve("hub/models--org--tiny");
        Path blobs = Files.createDirectories(repo.resolve("blobs"));
        Path snapshot = Files.createDirectories(repo.resolve("snapshots/0123abcd"));
        Path model = model("hub-source");
        for (String name : new String[] {"model.safetensors", "tokenizer.json"}) {
            Path blob = blobs.resolve("blob-" + name.hashCode());
            if (name.equals("tokenizer.json")) {
                Files.writeString(blob, "{\"version\": \"1.0\"}");
            } else {
                Files.copy(model.resolve(name), blob);
            }
            Files.createSymbolicLink(snapshot.resolve(name), Path.of("../../blobs").resolve(blob.getFileName()));
        }
        Path out = tmp.resolve("from-hub");
        try (Checkpoint ckpt = Checkpoint.open(snapshot)) {
            Export.of(ckpt).to(out);
        }
        assertEquals("{\"version\": \"1.0\"}", Files.readString(out.resolve("tokenizer.json")));
    }

    /**
     * A tensor name with an ANSI escape (clear screen) and a line break: {@code inspect}'s table shows each control
     * character as '?' instead of letting the file rewrite the terminal or forge a line; the JSON output escapes them.
     */
    @Test
    void namesCannotRewriteTheTerminal() throws IOException {
        Path f = tmp.resolve("ansi.safetensors");
        writeSafetensors(f, "{\"w\\u001b[2J\\r\\nok\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
        java.io.StringWriter out = new java.io.StringWriter();
        java.io.StringWriter err = new java.io.StringWriter();
        assertEquals(0, dev.dequant4j.cli.Main.run(new String[] {"inspect", f.toString()},
                new java.io.PrintWriter(out, true), new java.io.PrintWriter(err, true)), err.toString());
        assertTrue(out.toString().lines().anyMatch(l -> l.startsWith("w?[2J??ok  PLAIN")), out.toString());
        assertTrue(out.toString().replace(System.lineSeparator(), "").chars().noneMatch(Character::isISOControl));
    }

    /** Writes a safetensors file whose header is {@code before}, {@code n} letters A and {@code after}. */
    private static void writeLarge(Path f, String before, int n, String after) throws IOException {
        byte[] a = before.getBytes(StandardCharsets.UTF_8);
        byte[] z = after.getBytes(StandardCharsets.UTF_8);
        byte[] chunk = "A".repeat(1 << 20).getBytes(StandardCharsets.US_ASCII);
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong((long) a.length + n + z.length)
                    .flip());
            ch.write(ByteBuffer.wrap(a));
            for (int left = n; left > 0; left -= chunk.length) {
                ch.write(ByteBuffer.wrap(chunk, 0, Math.min(left, chunk.length)));
            }
            ch.write(ByteBuffer.wrap(z));
        }
    }

}
