package dev.dequant4j.internal.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Dequant4jException;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/**
 * The protobuf reader of tokenizer.model on sentencepiece's own files (fixtures/gguf/tokenizers; that their pieces,
 * scores and types are what SentencePieceProcessor reports is GgufTokenizerTest's comparison with the converter) and
 * on broken ones.
 */
class SentencePieceModelTest {
    private static final Path NAME = Path.of("tokenizer.model");

    static byte[] model(String kind) throws IOException {
        return Files.readAllBytes(GgufTokenizerTest.gguf("tokenizers/" + kind).resolve("tokenizer.model"));
    }

    private static String refused(byte[] bytes) {
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> SentencePieceModel.parse(NAME, bytes));
        assertEquals(Dequant4jException.Kind.CORRUPT_INPUT, e.kind());
        assertTrue(e.getMessage().startsWith("tokenizer.model: not a valid SentencePiece model: "), e.getMessage());
        assertEquals(1, e.getMessage().lines().count(), e.getMessage());
        return e.getMessage();
    }

    @Test
    void readsSentencepiecesOwnFiles() throws IOException {
        SentencePieceModel llama = SentencePieceModel.parse(NAME, model("spm-llama"));
        assertEquals(400, llama.pieces().size());
        assertEquals(2, llama.modelType());
        assertEquals(new SentencePieceModel.Piece("<unk>", 0f, SentencePieceModel.UNKNOWN), llama.pieces().get(0));
        assertEquals(new SentencePieceModel.Piece("<0x00>", 0f, SentencePieceModel.BYTE), llama.pieces().get(3));
        SentencePieceModel mistral = SentencePieceModel.parse(NAME, model("spm-mistral"));
        assertEquals(SentencePieceModel.CONTROL, mistral.pieces().get(3).type());
        SentencePieceModel gemma = SentencePieceModel.parse(NAME, model("spm-gemma"));
        assertEquals(new SentencePieceModel.Piece("<mask>", 0f, SentencePieceModel.USER_DEFINED),
                gemma.pieces().get(4));
    }

    @Test
    void everyTruncationParsesOrIsOneLine() throws IOException {
        byte[] full = model("spm-mistral");
        int parsed = 0;
        for (int n = 0; n < full.length; n++) {
            byte[] cut = Arrays.copyOf(full, n);
            try {
                SentencePieceModel m = SentencePieceModel.parse(NAME, cut);
                assertTrue(m.pieces().size() <= 400);
                parsed++;
            } catch (Dequant4jException e) {
                assertEquals(1, e.getMessage().lines().count(), e.getMessage());
                assertEquals(Dequant4jException.Kind.CORRUPT_INPUT, e.kind());
            }
        }
        // A cut between two fields is a valid model (protobuf has no end marker), as sentencepiece would read it too,
        // once <unk> and the trainer spec saying byte_fallback are in it.
        assertTrue(parsed > 0 && parsed < full.length, "parsed " + parsed);
    }

    @Test
    void refusesGarbageAndHostileLengths() {
        assertTrue(refused(new byte[0]).endsWith("no pieces"));
        assertTrue(refused("not a model at all, just text".getBytes(StandardCharsets.UTF_8)).contains("wire type"));
        // pieces (field 1, length-delimited) claiming 2^62 bytes
        assertTrue(refused(new byte[] {0x0A, (byte) 0x80, (byte) 0x80, (byte) 0x80, (byte) 0x80, (byte) 0x80,
                (byte) 0x80, (byte) 0x80, (byte) 0x80, 0x40}).contains("exceeds the 0 bytes left"));
        // an 11-byte varint
        byte[] longVarint = new byte[12];
        Arrays.fill(longVarint, (byte) 0xFF);
        refused(longVarint);
    }

    private static byte[] piece(String text, int type) {
        ByteArrayOutputStream p = new ByteArrayOutputStream();
        byte[] t = text.getBytes(StandardCharsets.UTF_8);
        p.write(0x0A);
        p.write(t.length);
        p.writeBytes(t);
        p.write(0x15);
        p.writeBytes(new byte[] {0, 0, 0, 0});
        p.write(0x18);
        p.write(type);
        ByteArrayOutputStream m = new ByteArrayOutputStream();
        m.write(0x0A);
        m.write(p.size());
        m.writeBytes(p.toByteArray());
        return m.toByteArray();
    }

    private static byte[] concat(byte[]... parts) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (byte[] p : parts) {
            out.writeBytes(p);
        }
        return out.toByteArray();
    }

    @Test
    void refusesWhatSentencepieceRefusesToLoad() {
        assertEquals(2, SentencePieceModel.parse(NAME, concat(piece("<unk>", 2), piece("a", 1))).pieces().size());
        assertTrue(refused(piece("a", 1)).endsWith("no UNKNOWN piece"));
        assertTrue(refused(concat(piece("<unk>", 2), piece("<u>", 2))).contains("two UNKNOWN pieces"));
        assertTrue(refused(concat(piece("<unk>", 2), piece("a", 1), piece("a", 1))).contains("already defined"));
        assertTrue(refused(concat(piece("<unk>", 2), piece("", 1))).contains("is empty"));
        assertTrue(refused(concat(piece("<unk>", 2), piece("a", 9))).contains("type of piece 1 is 9"));
        assertTrue(refused(concat(piece("<unk>", 2), piece("<0x41>", 6))).contains("byte_fallback is false"));
        byte[] badUtf8 = piece("<unk>", 2);
        badUtf8[4] = (byte) 0xC3;
        assertTrue(refused(badUtf8).contains("is not UTF-8"));
    }
}
