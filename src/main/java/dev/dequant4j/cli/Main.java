package dev.dequant4j.cli;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.internal.Printable;
import java.io.PrintWriter;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * The dequant4j command line. Exit codes: 0 success, 1 bad input or a failed run, whatever its
 * {@link Dequant4jException.Kind} (one line on stderr starting with {@code error:}; with {@code --json} also a JSON
 * error object on stdout, {@link CliJson}), 2 usage error. {@code --debug} adds the stack trace.
 */
@Command(name = "dequant4j", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "Reads bitsandbytes-quantized checkpoints and LoRA adapters; exports plain FP16/BF16/F32 models.",
        subcommands = {InspectCommand.class, ExportCommand.class, VerifyCommand.class})
public final class Main implements Runnable {
    @Option(names = "--debug", scope = CommandLine.ScopeType.INHERIT, description = "Print stack traces of errors.")
    boolean debug;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(new CommandLine(this),
                "a command is required: inspect, export or verify");
    }

    public static void main(String[] args) {
        VectorRelaunch.watchParent();
        var relaunch = VectorRelaunch.command(args, VectorRelaunch.Jvm.current());
        if (relaunch.isPresent()) {
            try {
                System.exit(VectorRelaunch.run(relaunch.get()));
            } catch (java.io.IOException e) {
                // The JVM could not be started again: export here, with the scalar kernels.
            } catch (InterruptedException e) {
                System.exit(130);
            }
        }
        System.exit(run(args, new PrintWriter(System.out, true), new PrintWriter(System.err, true)));
    }

    /** Runs the command line and returns its exit code (for tests). */
    public static int run(String[] args, PrintWriter rawOut, PrintWriter rawErr) {
        // everything printed may quote a file: one sanitizer for all of it (JSON output is escaped anyway)
        PrintWriter out = Printable.writer(rawOut);
        PrintWriter err = Printable.writer(rawErr);
        boolean debug = java.util.Arrays.asList(args).contains("--debug");
        configureLogging(debug || java.util.Arrays.asList(args).contains("--verbose"));
        CommandLine cl = new CommandLine(new Main());
        cl.setOut(out);
        cl.setErr(err);
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            if (outOfMemory(ex)) {
                return outOfMemory(err);
            }
            String message = forCli(oneLine(ex));
            err.println("error: " + message);
            if (debug) {
                printStackTrace(ex, err);
            }
            err.flush();
            if (cmd.getCommand() instanceof CliJson.Output o && o.json()) {
                CliJson.printError(out, ex, message);
            }
            return ex instanceof IllegalArgumentException && !(ex instanceof Dequant4jException) ? 2 : 1;
        });
        cl.setParameterExceptionHandler((ex, a) -> {
            err.println("error: " + ex.getMessage());
            if (ex.getCommandLine() != null) {
                err.println("Try '" + ex.getCommandLine().getCommandSpec().qualifiedName() + " --help' for usage.");
            }
            err.flush();
            if (java.util.Arrays.asList(a).contains("--json")) {
                CliJson.printError(out, "usage", null, null, oneLine(ex));
            }
            return 2;
        });
        try {
            return cl.execute(args);
        } catch (OutOfMemoryError e) {
            return outOfMemory(err);
        }
    }

    private static boolean outOfMemory(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof OutOfMemoryError) {
                return true;
            }
        }
        return false;
    }

    /**
     * What is left of an {@link OutOfMemoryError} that no size check foresaw: one line saying how much heap there was
     * and how to give more, instead of a trace. The output's temporary directory is removed as for any failure.
     */
    static int outOfMemory(PrintWriter err) {
        long mib = Runtime.getRuntime().maxMemory() >> 20;
        err.println("error: out of memory: the Java heap is " + mib + " MiB; give the JVM more with -Xmx, e.g."
                + " java -Xmx" + Math.max(2, 2 * ((mib + 1023) / 1024)) + "g -jar dequant4j-cli.jar ... (or"
                + " JAVA_TOOL_OPTIONS=-Xmx...)");
        err.flush();
        return 1;
    }

    /** The trace for --debug: its indentation kept, everything else through the sanitizer like all output. */
    private static void printStackTrace(Throwable ex, PrintWriter err) {
        java.io.StringWriter trace = new java.io.StringWriter();
        ex.printStackTrace(new PrintWriter(trace));
        PrintWriter raw = Printable.raw(err);
        trace.toString().lines().forEach(l -> raw.println(l.startsWith("\t") ? "\t" + Printable.of(l.substring(1))
                : Printable.of(l)));
    }

    /** Library log records (System.Logger, routed to java.util.logging) as single "level: message" lines. */
    private static void configureLogging(boolean verbose) {
        java.util.logging.Logger root = java.util.logging.Logger.getLogger("");
        for (java.util.logging.Handler h : root.getHandlers()) {
            h.setFormatter(new java.util.logging.SimpleFormatter() {
                @Override
                public String format(java.util.logging.LogRecord r) {
                    return r.getLevel().getName().toLowerCase(java.util.Locale.ROOT) + ": "
                            + Printable.of(formatMessage(r)) + System.lineSeparator();
                }
            });
        }
        java.util.logging.Logger.getLogger("dev.dequant4j")
                .setLevel(verbose ? java.util.logging.Level.INFO : java.util.logging.Level.WARNING);
    }

    /** API options that library messages name, and the flags that set them here. */
    private static final String[][] FLAGS = {
        {"Export.overwrite(true)", "--overwrite"},
        {"Export.allowNonFinite(true)", "--allow-non-finite"},
        {"Backend.CUDA", "--backend cuda"},
        {"LoraAdapter.open", "--adapter"},
    };

    /** A library message as the command line says it: with its flags instead of the API options they set. */
    static String forCli(String message) {
        String m = message;
        for (String[] f : FLAGS) {
            m = m.replace(f[0], f[1]);
        }
        return m;
    }

    /** The message on one line; exceptions that are not about the input also name their class. */
    static String oneLine(Throwable e) {
        String m = e.getMessage();
        boolean aboutInput = e instanceof Dequant4jException || e instanceof IllegalArgumentException
                || e instanceof java.io.IOException;
        if (m == null) {
            m = e.getClass().getSimpleName();
        } else if (!aboutInput) {
            m = e.getClass().getSimpleName() + ": " + m;
        }
        return Printable.of(m);
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = Main.class.getPackage().getImplementationVersion();
            return new String[] {"dequant4j " + (v != null ? v : "(development build)"),
                "Java " + Runtime.version()};
        }
    }
}
