/**
 * Bearer-token authentication (`--api-key`): the `Authorization: Bearer KEY` header against the server's key,
 * compared in constant time. Both sides are first reduced to HMAC-SHA-256 digests under a random per-process
 * key, so the comparison runs over 32 bytes whatever the lengths given, and a fixed-length XOR loop decides.
 */

/** Checks Authorization headers against one API key. */
export class ApiKeyAuth {
  readonly #hmacKey: Promise<CryptoKey>;
  readonly #expected: Promise<Uint8Array>;

  constructor(apiKey: string) {
    if (apiKey.length === 0) throw new Error("the API key is empty");
    this.#hmacKey = crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, ["sign"]) as Promise<
      CryptoKey
    >;
    this.#expected = this.#digest(apiKey);
  }

  async #digest(s: string): Promise<Uint8Array> {
    return new Uint8Array(
      await crypto.subtle.sign("HMAC", await this.#hmacKey, new TextEncoder().encode(s)),
    );
  }

  /** Whether `authorization` (the header's value, or null) is `Bearer <the key>`. */
  async check(authorization: string | null): Promise<boolean> {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? "");
    // A missing or malformed header is digested too, so that every answer takes the same path.
    const got = await this.#digest(m ? m[1] : "");
    const want = await this.#expected;
    let diff = m ? 0 : 1;
    for (let i = 0; i < want.length; i++) diff |= got[i] ^ want[i];
    return diff === 0;
  }
}
