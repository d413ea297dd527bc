package dev.dequant4j.cli;

import dev.dequant4j.ExportResult;
import dev.dequant4j.ProgressListener;
import java.io.PrintWriter;
import java.util.Locale;

/**
 * Renders export progress: one redrawn bar on a terminal; otherwise plain lines, at most one per 10% of the bytes
 * and never more than one per second (a small export prints only its last line), plus one every 10 s while slow.
 */
final class ProgressPrinter implements ProgressListener {
    private final PrintWriter err;
    private final boolean terminal;
    private final long start = System.nanoTime();
    private volatile int tensors;
    private volatile long bytes;
    private volatile int tensorsDone;
    private long lastPrint = System.nanoTime();
    private int lastPercent = -1;

    ProgressPrinter(PrintWriter err, boolean terminal) {
        this.err = err;
        this.terminal = terminal;
    }

    @Override
    public void onStart(int tensors, long bytes) {
        this.tensors = tensors;
        this.bytes = bytes;
    }

    @Override
    public void onTensor(String name, int index, long bytesDone) {
        tensorsDone = index;
        onBytes(bytesDone);
    }

    @Override
    public synchronized void onBytes(long done) {
        long now = System.nanoTime();
        int percent = bytes == 0 ? 100 : (int) (done * 100 / bytes);
        if (terminal) {
            if (now - lastPrint < 100_000_000L && done < bytes) {
                return;
            }
            lastPrint = now;
            int width = 30;
            int filled = (int) ((long) percent * width / 100);
            String bar = "#".repeat(filled) + ".".repeat(width - filled);
            err.print("\r[" + bar + "] " + String.format(Locale.ROOT, "%3d%%", percent) + " " + line(done, now)
                    + "   ");
            err.flush();
        } else if (done == bytes || (percent / 10 != lastPercent / 10 && now - lastPrint >= 1_000_000_000L)
                || now - lastPrint > 10_000_000_000L) {
            lastPercent = percent;
            lastPrint = now;
            err.println("export: " + percent + "% " + line(done, now));
            err.flush();
        }
    }

    private String line(long done, long now) {
        double secs = Math.max(1e-9, (now - start) / 1e9);
        double rate = done / secs;
        String eta = rate > 0 && done < bytes ? " ETA " + duration((bytes - done) / rate) : "";
        return tensorsDone + "/" + tensors + " tensors, " + Table.bytes(done) + " of " + Table.bytes(bytes) + ", "
                + Table.bytes((long) rate) + "/s" + eta;
    }

    static String duration(double secs) {
        long s = Math.round(secs);
        return s >= 3600 ? String.format(Locale.ROOT, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
                : String.format(Locale.ROOT, "%d:%02d", s / 60, s % 60);
    }

    @Override
    public void onDone(ExportResult result) {
        if (terminal) {
            err.println();
            err.flush();
        }
    }
}
