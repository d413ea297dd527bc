package dev.dequant4j;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** What this process has mapped of a file, as {@code ps}, {@code top} and {@code /usr/bin/time} count it. */
public final class ProcessMemory {
    private static final Path SMAPS = Path.of("/proc/self/smaps");

    private ProcessMemory() {}

    /** Whether {@link #residentBytes} can tell: Linux's /proc/self/smaps is readable. */
    public static boolean available() {
        return Files.isReadable(SMAPS);
    }

    /** Rss of this process's mappings of {@code file}, from /proc/self/smaps. */
    public static long residentBytes(Path file) {
        String name = file.toAbsolutePath().toString();
        long kb = 0;
        boolean in = false;
        try {
            for (String line : Files.readAllLines(SMAPS)) {
                if (Character.isDigit(line.charAt(0)) || Character.isLowerCase(line.charAt(0))) {
                    in = line.endsWith(" " + name);
                } else if (in && line.startsWith("Rss:")) {
                    kb += Long.parseLong(line.substring(4).trim().split("\\s+")[0]);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return kb << 10;
    }
}
