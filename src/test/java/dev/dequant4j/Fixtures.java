package dev.dequant4j;

import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

/** The shared reference fixtures (made by bitsandbytes' and PEFT's own code), copied into test resources. */
public final class Fixtures {
    private Fixtures() {}

    public static Path root() {
        try {
            return Path.of(Fixtures.class.getResource("/fixtures/manifest.json").toURI()).getParent();
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    public static Path checkpoint(String name) {
        return root().resolve("checkpoints").resolve(name);
    }

    public static Path adapter(String name) {
        return root().resolve("adapters").resolve(name);
    }

    /** Checkpoints saved by transformers 5.17 + bitsandbytes 0.50 and adapters saved by PEFT 0.21 (real/README.md). */
    public static Path real() {
        return root().resolve("real");
    }

    public static List<String> checkpointNames() {
        return list(root().resolve("checkpoints"));
    }

    public static List<String> adapterNames() {
        return list(root().resolve("adapters"));
    }

    public static List<String> mergePairs() {
        return list(root().resolve("expected/merged"));
    }

    /**
     * The entries of {@code section} ({@code checkpoints} or {@code adapters}) of {@code real/manifest.json}, the
     * per-architecture fixtures of scripts/fixtures/make_real_checkpoints.py (other generators' files in
     * {@code real/} are not listed there).
     */
    public static List<String> realNames(String section) {
        try {
            return dev.dequant4j.internal.json.Json.readObject(real().resolve("manifest.json"), 1 << 20)
                    .getObject(section).keys().stream().sorted().toList();
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
    }

    private static List<String> list(Path dir) {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(Files::isDirectory).map(p -> p.getFileName().toString()).sorted().toList();
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
    }
}
