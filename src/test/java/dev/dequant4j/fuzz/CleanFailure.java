package dev.dequant4j.fuzz;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.internal.json.JsonException;
import java.lang.management.ManagementFactory;

/**
 * The property every parser must hold on any input (issue 6): it either parses or throws one of our typed
 * exceptions with a one-line message; no other throwable escapes, and the bytes it allocates stay within a bound
 * derived from the input's size. Termination is the fuzz tests' {@code @Timeout}, which Jazzer also turns into
 * libFuzzer's per-input {@code -timeout}.
 */
public final class CleanFailure {
    /** Class loading, static tables and the first-use caches of the JDK, paid once per input at most. */
    static final long FIXED_ALLOWANCE = 32L << 20;
    /**
     * Bytes allocated per input byte. A JSON tree costs about 16 bytes per input byte at worst ({@code [0,0,...]}),
     * a header's tensor entries a few, and dequantizing a 4-bit tensor to floats 8; the allowance leaves room for
     * all of those at once but not for an allocation sized from a number in the file.
     */
    static final long PER_INPUT_BYTE = 64;

    private static final com.sun.management.ThreadMXBean THREADS =
            (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();

    /** What the fuzz target does with one input. */
    @FunctionalInterface
    public interface Parse {
        void run() throws Exception;
    }

    /** The outcome, for targets that check more than the property (e.g. the CLI's exit code). */
    public enum Outcome { PARSED, REFUSED }

    private CleanFailure() {}

    /**
     * Runs {@code parse} on the current thread and checks the property for an input of {@code inputBytes}. Any
     * throwable other than ours propagates unchanged, so Jazzer reports it (with its stack) as a finding.
     */
    public static Outcome check(long inputBytes, Parse parse) throws Exception {
        long before = THREADS.getCurrentThreadAllocatedBytes();
        Outcome outcome;
        try {
            parse.run();
            outcome = Outcome.PARSED;
        } catch (Dequant4jException | JsonException e) {
            checkMessage(e);
            outcome = Outcome.REFUSED;
        }
        long used = THREADS.getCurrentThreadAllocatedBytes() - before;
        long bound = FIXED_ALLOWANCE + PER_INPUT_BYTE * inputBytes;
        if (used > bound) {
            throw new AssertionError("allocated " + used + " bytes for a " + inputBytes + "-byte input (bound "
                    + bound + ")");
        }
        return outcome;
    }

    /**
     * Our messages say something, and what reaches the user is one line. A {@link JsonException} from a parser
     * called directly may quote a key with a newline in it: every caller wraps it in a {@link Dequant4jException},
     * whose message is made one line.
     */
    static void checkMessage(RuntimeException e) {
        String m = e.getMessage();
        if (m == null || m.isBlank()) {
            throw new AssertionError("exception without a message", e);
        }
        if (e instanceof Dequant4jException && (m.indexOf('\n') >= 0 || m.indexOf('\r') >= 0)) {
            throw new AssertionError("message of more than one line: " + m, e);
        }
    }
}
