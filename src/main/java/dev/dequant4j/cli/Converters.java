package dev.dequant4j.cli;

import dev.dequant4j.DType;
import dev.dequant4j.GgufFileType;
import dev.dequant4j.TiedEmbeddings;
import dev.dequant4j.internal.export.Sizes;
import java.nio.file.Path;
import java.util.Locale;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/**
 * Option values the command line reads itself: picocli calls these while parsing, so a bad value is a usage error
 * ({@code Invalid value for option '--dtype': ...}, exit 2) answered before any work starts, and before the JVM
 * would be restarted for an export ({@link VectorRelaunch}).
 */
final class Converters {
    private Converters() {}

    /** {@code f16}, {@code bf16} or {@code f32}, with PyTorch's spellings ({@code float16}, ...) too. */
    static final class OutputDType implements ITypeConverter<DType> {
        @Override
        public DType convert(String s) {
            return switch (s.toLowerCase(Locale.ROOT)) {
                case "f16", "fp16", "float16" -> DType.F16;
                case "bf16", "bfloat16" -> DType.BF16;
                case "f32", "fp32", "float32" -> DType.F32;
                default -> throw new TypeConversionException("f16, bf16 or f32, not '" + s + "'");
            };
        }
    }

    /** A GGUF type by llama.cpp's name. */
    static final class GgufType implements ITypeConverter<GgufFileType> {
        @Override
        public GgufFileType convert(String s) {
            return switch (s.toLowerCase(Locale.ROOT)) {
                case "f32" -> GgufFileType.F32;
                case "f16" -> GgufFileType.F16;
                case "bf16" -> GgufFileType.BF16;
                case "q8_0" -> GgufFileType.Q8_0;
                case "q4_k_m" -> GgufFileType.Q4_K_M;
                case "q5_k_m" -> GgufFileType.Q5_K_M;
                case "q6_k" -> GgufFileType.Q6_K;
                default -> throw new TypeConversionException("f32, f16, bf16, q8_0, q4_k_m, q5_k_m or q6_k, not '"
                        + s + "'");
            };
        }
    }

    /** {@code as-trained} or {@code merge-and-unload}. */
    static final class Tied implements ITypeConverter<TiedEmbeddings> {
        @Override
        public TiedEmbeddings convert(String s) {
            return switch (s.toLowerCase(Locale.ROOT)) {
                case "as-trained" -> TiedEmbeddings.AS_TRAINED;
                case "merge-and-unload" -> TiedEmbeddings.MERGE_AND_UNLOAD;
                default -> throw new TypeConversionException("as-trained or merge-and-unload, not '" + s + "'");
            };
        }
    }

    /** A byte size with transformers' suffixes ({@link Sizes}): {@code 5GB} = 5 * 10^9, {@code 2GiB} = 2 * 2^30. */
    static final class Size implements ITypeConverter<Long> {
        @Override
        public Long convert(String s) {
            try {
                return Sizes.parse(s);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException(e.getMessage());
            }
        }
    }

    /** A count of at least one. */
    static final class Positive implements ITypeConverter<Integer> {
        @Override
        public Integer convert(String s) {
            int n;
            try {
                n = Integer.parseInt(s.trim());
            } catch (NumberFormatException e) {
                throw new TypeConversionException("not a whole number: '" + s + "'");
            }
            if (n < 1) {
                throw new TypeConversionException("must be at least 1, not " + n);
            }
            return n;
        }
    }

    /** A directory to write: an empty path would mean the working directory, which --overwrite would replace. */
    static final class OutputDirectory implements ITypeConverter<Path> {
        @Override
        public Path convert(String s) {
            if (s.isBlank()) {
                throw new TypeConversionException("must name a directory, not '" + s + "'");
            }
            try {
                return Path.of(s);
            } catch (java.nio.file.InvalidPathException e) {
                throw new TypeConversionException("not a path: " + e.getMessage());
            }
        }
    }
}
