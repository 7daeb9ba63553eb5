package sfcrime;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.exc.StreamConstraintsException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import org.apache.spark.sql.api.java.UDF1;

/**
 * Why a Kafka message is not exactly one RFC 8259 JSON object, or null: sfcrime/stream/transforms.py's
 * json_object_reason, run in the executors' JVM, so a batch's read needs no Python worker (README, "Latency").
 *
 * Strict UTF-8 first (Java's decoder refuses overlong forms, encoded surrogates and code points past U+10FFFF,
 * as Python's does), then Jackson with its defaults, which are RFC 8259's rules: no NaN or Infinity, no single
 * quotes, no comments, no leading zeros, no trailing commas, control characters only escaped. Jackson then must
 * find nothing after the object but JSON whitespace: Spark's own JSON reader ignores what follows it. Nesting
 * deeper than MAX_NESTING is refused, with its own reason, as json_object_reason refuses it; numbers, strings
 * and names may be of any length (Python refuses only integers of more than 4,300 digits).
 */
public final class StrictJsonReason implements UDF1<byte[], String> {
  public static final String NOT_AN_OBJECT = "not a JSON object";
  public static final String NOT_JSON = "not valid JSON";
  public static final String NOT_UTF8 = "not valid UTF-8";
  public static final int MAX_NESTING = 512;  // transforms.MAX_NESTING
  public static final String TOO_DEEP = "JSON nested deeper than " + MAX_NESTING;

  private static final JsonFactory JSON = JsonFactory.builder()
      .streamReadConstraints(StreamReadConstraints.builder()
          .maxNumberLength(Integer.MAX_VALUE)
          .maxStringLength(Integer.MAX_VALUE)
          .maxNameLength(Integer.MAX_VALUE)
          .maxDocumentLength(-1)
          .maxNestingDepth(MAX_NESTING)
          .build())
      .disable(JsonFactory.Feature.CANONICALIZE_FIELD_NAMES)  // no symbol table: many colliding keys stay valid
      .build();

  private static final ThreadLocal<CharsetDecoder> UTF8 = ThreadLocal.withInitial(() ->
      StandardCharsets.UTF_8.newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT));

  @Override
  public String call(byte[] value) {
    return reason(value);
  }

  public static String reason(byte[] value) {
    if (value == null) {
      return NOT_AN_OBJECT;
    }
    String text;
    try {
      text = UTF8.get().reset().decode(ByteBuffer.wrap(value)).toString();
    } catch (CharacterCodingException e) {
      return NOT_UTF8;
    }
    int start = 0;
    while (start < text.length() && isJsonWhitespace(text.charAt(start))) {
      start++;
    }
    if (start == text.length() || text.charAt(start) != '{') {
      return NOT_AN_OBJECT;
    }
    try (JsonParser parser = JSON.createParser(text)) {
      if (parser.nextToken() != JsonToken.START_OBJECT) {
        return NOT_AN_OBJECT;
      }
      parser.skipChildren();
      if (parser.currentToken() != JsonToken.END_OBJECT) {
        return NOT_JSON;
      }
      return parser.nextToken() == null ? null : NOT_JSON;
    } catch (StreamConstraintsException e) {
      return TOO_DEEP;  // the only constraint left in force
    } catch (IOException | RuntimeException e) {
      return NOT_JSON;
    }
  }

  private static boolean isJsonWhitespace(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
  }
}
