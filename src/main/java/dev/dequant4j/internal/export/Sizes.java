package dev.dequant4j.internal.export;

import java.util.Locale;

/** Byte sizes as transformers' {@code convert_file_size_to_int} reads them: "5GB" = 5 * 10^9, "5GiB" = 5 * 2^30. */
public final class Sizes {
    private Sizes() {}

    public static long parse(String text) {
        String s = text.trim().toUpperCase(Locale.ROOT);
        long mult = 1;
        String[][] units = {
            {"KIB", "1024"}, {"MIB", "1048576"}, {"GIB", "1073741824"}, {"TIB", "1099511627776"},
            {"KB", "1000"}, {"MB", "1000000"}, {"GB", "1000000000"}, {"TB", "1000000000000"}, {"B", "1"},
        };
        for (String[] u : units) {
            if (s.endsWith(u[0])) {
                mult = Long.parseLong(u[1]);
                s = s.substring(0, s.length() - u[0].length()).trim();
                break;
            }
        }
        double v;
        try {
            v = Double.parseDouble(s);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("not a size: '" + text + "' (use e.g. 300KB, 5GB, 2GiB or a byte count)");
        }
        double bytes = v * mult;
        if (!(bytes >= 1) || bytes > Long.MAX_VALUE) {
            throw new IllegalArgumentException("size out of range: '" + text + "'");
        }
        return (long) bytes;
    }
}
