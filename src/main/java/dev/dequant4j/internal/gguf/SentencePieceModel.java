package dev.dequant4j.internal.gguf;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * The pieces of a SentencePiece {@code tokenizer.model} ({@code ModelProto} of sentencepiece_model.proto), read with a
 * strict protobuf decoder of our own: every length is bounded by the bytes left in its message, groups and unknown
 * wire types are refused, strings must be UTF-8. The model is checked as {@code SentencePieceProcessor} checks it when
 * it loads one (no empty or repeated piece, exactly one UNKNOWN piece, byte pieces spelled {@code <0xXX>}), so a file
 * the converter could not load is refused here too.
 */
public final class SentencePieceModel {

    /** Piece types, numbered as {@code SentencePiece.Type} (and llama.cpp's token types). */
    public static final int NORMAL = 1;
    public static final int UNKNOWN = 2;
    public static final int CONTROL = 3;
    public static final int USER_DEFINED = 4;
    public static final int UNUSED = 5;
    public static final int BYTE = 6;

    /** The most pieces a model may hold (GGUF's limit on a string array). */
    public static final int MAX_PIECES = (int) GgufFile.MAX_STRINGS;

    /** One vocabulary entry. */
    public record Piece(String piece, float score, int type) {}

    private final List<Piece> pieces;
    private final int modelType;

    private SentencePieceModel(List<Piece> pieces, int modelType) {
        this.pieces = pieces;
        this.modelType = modelType;
    }

    /** The pieces in id order. */
    public List<Piece> pieces() {
        return pieces;
    }

    /** {@code TrainerSpec.model_type}: 1 UNIGRAM (the default), 2 BPE, 3 WORD, 4 CHAR. */
    public int modelType() {
        return modelType;
    }

    /** Parses {@code bytes}, the contents of {@code file}; any defect is one line naming the file. */
    public static SentencePieceModel parse(Path file, byte[] bytes) {
        try {
            return parse(bytes);
        } catch (Malformed e) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, file, "not a valid SentencePiece model: " + e.getMessage());
        }
    }

    private static SentencePieceModel parse(byte[] bytes) throws Malformed {
        Reader r = new Reader(bytes, 0, bytes.length);
        List<Piece> pieces = new ArrayList<>();
        int modelType = 1;
        boolean byteFallback = false;
        while (r.more()) {
            long key = r.varint();
            int field = field(key);
            int wire = (int) (key & 7);
            if (field == 1) {
                if (pieces.size() == MAX_PIECES) {
                    throw new Malformed("more than " + MAX_PIECES + " pieces");
                }
                pieces.add(piece(r.message(wire, "pieces"), pieces.size()));
            } else if (field == 2) {
                Reader spec = r.message(wire, "trainer_spec");
                while (spec.more()) {
                    long k = spec.varint();
                    int f = field(k);
                    int w = (int) (k & 7);
                    if (f == 3) {
                        modelType = (int) spec.enumValue(w, "trainer_spec.model_type", 1, 4);
                    } else if (f == 35) {
                        byteFallback = spec.enumValue(w, "trainer_spec.byte_fallback", 0, 1) == 1;
                    } else {
                        spec.skip(w);
                    }
                }
            } else {
                r.skip(wire);
            }
        }
        check(pieces, byteFallback);
        return new SentencePieceModel(List.copyOf(pieces), modelType);
    }

    private static Piece piece(Reader r, int id) throws Malformed {
        String text = null;
        float score = 0f;
        int type = NORMAL;
        while (r.more()) {
            long key = r.varint();
            int field = field(key);
            int wire = (int) (key & 7);
            switch (field) {
                case 1 -> text = r.string(wire, "piece " + id);
                case 2 -> score = r.fixed32Float(wire, "score of piece " + id);
                case 3 -> type = (int) r.enumValue(wire, "type of piece " + id, NORMAL, BYTE);
                default -> r.skip(wire);
            }
        }
        if (text == null || text.isEmpty()) {
            throw new Malformed("piece " + id + " is empty");
        }
        return new Piece(text, score, type);
    }

    private static void check(List<Piece> pieces, boolean byteFallback) throws Malformed {
        if (pieces.isEmpty()) {
            throw new Malformed("no pieces");
        }
        Set<String> seen = new HashSet<>();
        int unk = -1;
        for (int id = 0; id < pieces.size(); id++) {
            Piece p = pieces.get(id);
            if (!seen.add(p.piece())) {
                throw new Malformed("piece " + id + " '" + p.piece() + "' is already defined");
            }
            if (p.type() == UNKNOWN) {
                if (unk >= 0) {
                    throw new Malformed("two UNKNOWN pieces, " + unk + " and " + id);
                }
                unk = id;
            }
            if (p.type() == BYTE) {
                if (!byteFallback) {
                    throw new Malformed("byte piece " + id + " but trainer_spec.byte_fallback is false");
                }
                if (!p.piece().matches("<0x[0-9A-F]{2}>")) {
                    throw new Malformed("byte piece " + id + " is '" + p.piece() + "', not <0xXX>");
                }
            }
        }
        if (unk < 0) {
            throw new Malformed("no UNKNOWN piece");
        }
    }

    private static int field(long key) throws Malformed {
        long f = key >>> 3;
        if (f < 1 || f > 0x1FFF_FFFF) {
            throw new Malformed("field number " + f + " out of range");
        }
        return (int) f;
    }

    /** A protobuf decoding failure; becomes one line naming the file. */
    private static final class Malformed extends Exception {
        private static final long serialVersionUID = 1L;

        Malformed(String message) {
            super(message, null, false, false);
        }
    }

    /** Reads one message's bytes, {@code [pos, end)}. */
    private static final class Reader {
        private final byte[] b;
        private int pos;
        private final int end;

        Reader(byte[] b, int pos, int end) {
            this.b = b;
            this.pos = pos;
            this.end = end;
        }

        boolean more() {
            return pos < end;
        }

        long varint() throws Malformed {
            long v = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                if (pos >= end) {
                    throw new Malformed("truncated varint at byte " + pos);
                }
                int c = b[pos++] & 0xFF;
                if (shift == 63 && c > 1) {
                    throw new Malformed("varint longer than 64 bits at byte " + (pos - 1));
                }
                v |= (long) (c & 0x7F) << shift;
                if (c < 0x80) {
                    return v;
                }
            }
            throw new Malformed("varint longer than 10 bytes at byte " + pos);
        }

        private int length() throws Malformed {
            int at = pos;
            long n = varint();
            // unsigned: a 64-bit varint with the top bit set is a huge length, not a negative one
            if (Long.compareUnsigned(n, end - pos) > 0) {
                throw new Malformed("length " + Long.toUnsignedString(n) + " at byte " + at + " exceeds the "
                        + (end - pos) + " bytes left");
            }
            return (int) n;
        }

        Reader message(int wire, String what) throws Malformed {
            expect(wire, 2, what);
            int n = length();
            Reader sub = new Reader(b, pos, pos + n);
            pos += n;
            return sub;
        }

        String string(int wire, String what) throws Malformed {
            expect(wire, 2, what);
            int n = length();
            try {
                String s = StandardCharsets.UTF_8.newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(ByteBuffer.wrap(b, pos, n)).toString();
                pos += n;
                return s;
            } catch (CharacterCodingException e) {
                throw new Malformed(what + " is not UTF-8");
            }
        }

        float fixed32Float(int wire, String what) throws Malformed {
            expect(wire, 5, what);
            if (end - pos < 4) {
                throw new Malformed("truncated " + what);
            }
            int bits = (b[pos] & 0xFF) | (b[pos + 1] & 0xFF) << 8 | (b[pos + 2] & 0xFF) << 16 | (b[pos + 3] & 0xFF) << 24;
            pos += 4;
            return Float.intBitsToFloat(bits);
        }

        long enumValue(int wire, String what, long min, long max) throws Malformed {
            expect(wire, 0, what);
            long v = varint();
            if (v < min || v > max) {
                throw new Malformed(what + " is " + v + ", not " + min + ".." + max);
            }
            return v;
        }

        void skip(int wire) throws Malformed {
            switch (wire) {
                case 0 -> varint();
                case 1 -> advance(8);
                case 2 -> advance(length());
                case 5 -> advance(4);
                default -> throw new Malformed("wire type " + wire + " at byte " + pos + " (groups are not used)");
            }
        }

        private void advance(int n) throws Malformed {
            if (n > end - pos) {
                throw new Malformed("truncated field at byte " + pos);
            }
            pos += n;
        }

        private void expect(int wire, int want, String what) throws Malformed {
            if (wire != want) {
                throw new Malformed(what + " has wire type " + wire + ", not " + want + " (at byte " + pos + ")");
            }
        }
    }
}
