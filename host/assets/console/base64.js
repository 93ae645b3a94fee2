// Base64 for μ-law payloads (Media Streams `media.payload`) and the test hooks.

/** Standard base64 (with padding) of a Uint8Array; built in pieces so large arrays do not
 * overflow the argument limit of String.fromCharCode. */
export function toBase64(bytes) {
  let binary = "";
  const piece = 0x8000;
  for (let i = 0; i < bytes.length; i += piece) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + piece));
  }
  return btoa(binary);
}

/** The bytes of a standard base64 string. Throws (DOMException) on invalid input. */
export function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** One Uint8Array holding `chunks` (Uint8Arrays) end to end. */
export function concatBytes(chunks) {
  let length = 0;
  for (const c of chunks) length += c.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
