// Package oauth gets OAuth2 access tokens for oauth2 credentials and keeps
// them in memory: Config describes a credential (token endpoint, client id,
// client secret or private key for private_key_jwt, refresh token for the
// delegated form, scopes; presets for Microsoft 365 and Google), and Tokens
// caches one access token per credential name, fetched with
// golang.org/x/oauth2.
//
// What it promises:
//
//   - Secrets stay in memory. Client secrets, private keys, refresh tokens
//     and access tokens are Secrets, which print as [redacted] through
//     every fmt verb, slog, and encoding/json; a Config prints only whether
//     they are set. No error holds one: token endpoint errors name the
//     endpoint and the OAuth error code and description, and a
//     description that repeats a secret, an assertion or a token is
//     redacted. Nothing is written to disk.
//   - Deliveries rarely wait on the token endpoint. A token is handed out
//     until shortly before it expires (the later of 60 s or a tenth of its
//     lifetime before, at most half of it), and the first request in its
//     last stretch starts a refresh in the background while it still gets
//     the current token. There is at most one request in flight per
//     credential; concurrent callers share it.
//   - Failures are plain. An endpoint that does not answer gives a
//     *TokenError matching ErrUnreachable; one that refuses gives its OAuth
//     error code (invalid_client, invalid_scope, invalid_grant). A failure
//     is answered from memory for FailHold, so a burst of deliveries makes
//     one request. A failed background refresh is logged once per run of
//     failures, and the cached token is used until it is past use.
//   - A changed credential (another secret, key, scope, or Version) drops
//     the cached token; Invalidate drops it after the relay refused it. For
//     the refresh-token form, a new Version that changes nothing else and
//     carries the given or the rotated refresh token (written back) is the
//     same credential.
//   - Rotated refresh tokens: when the endpoint returns a new refresh token,
//     Tokens uses it for every later refresh (the old one may be void) and
//     reports it once through Options.OnRefreshToken. A config that still
//     carries the old refresh token, or already the new one, counts as the
//     same credential. Where it goes from there is the source's choice: a
//     Vault source can write it back to the entry; an age file cannot be
//     rewritten by the agent, so the new token lives in memory only, and
//     a restart falls back to the sealed one (which the provider may have
//     revoked) until the operator re-seals.
package oauth
