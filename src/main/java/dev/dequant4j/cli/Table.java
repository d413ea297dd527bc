package dev.dequant4j.cli;

import dev.dequant4j.internal.Printable;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;

/**
 * A plain-text table with left-aligned columns, for terminal output. Cells come from files (a tensor name may be a
 * million characters), so each is sanitized and a cell longer than {@link #MAX_CELL} characters is shortened
 * visibly, keeping its start and end ({@code --json} has the full text).
 */
final class Table {
    static final int MAX_CELL = 100;
    private static final String ELISION = "...";

    private final List<String[]> rows = new ArrayList<>();
    private final String[] header;

    Table(String... header) {
        this.header = header;
    }

    void add(String... cells) {
        String[] shown = new String[cells.length];
        for (int i = 0; i < cells.length; i++) {
            shown[i] = shorten(Printable.of(cells[i]));
        }
        rows.add(shown);
    }

    /** {@code s}, or its first and last characters around "..." if it is longer than {@link #MAX_CELL}. */
    static String shorten(String s) {
        if (s.length() <= MAX_CELL) {
            return s;
        }
        int head = (MAX_CELL - ELISION.length()) * 2 / 3;
        int tail = MAX_CELL - ELISION.length() - head;
        return s.substring(0, head) + ELISION + s.substring(s.length() - tail);
    }

    void print(PrintWriter out) {
        int[] w = new int[header.length];
        for (int i = 0; i < header.length; i++) {
            w[i] = header[i].length();
        }
        for (String[] r : rows) {
            for (int i = 0; i < r.length; i++) {
                w[i] = Math.max(w[i], r[i].length());
            }
        }
        line(out, header, w);
        for (String[] r : rows) {
            line(out, r, w);
        }
    }

    private static void line(PrintWriter out, String[] cells, int[] w) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < cells.length; i++) {
            if (i > 0) {
                sb.append("  ");
            }
            sb.append(cells[i]);
            if (i < cells.length - 1) {
                sb.repeat(' ', w[i] - cells[i].length());
            }
        }
        out.println(sb);
    }

    static String bytes(long b) {
        if (b < 1000) {
            return b + " B";
        }
        String[] units = {"kB", "MB", "GB", "TB", "PB"};
        double v = b;
        int u = -1;
        while (v >= 1000 && u < units.length - 1) {
            v /= 1000;
            u++;
        }
        return String.format(java.util.Locale.ROOT, "%.1f %s", v, units[u]);
    }
}
