// Package rotate rotates one relay credential with no operator in the
// loop (docs/credentials.md, "Rotation"), in five steps:
//
//  1. make a new secret: a random password, or what a make hook prints
//     for kinds sealrelay cannot make itself (an ses access key, an oauth2
//     client secret);
//  2. set it at the relay through the set hook, while the old one stays
//     valid;
//  3. reseal the entry with it (the age file, to the recipient list; or a
//     new Vault KV version);
//  4. wait until every agent of the fleet reports the new generation and
//     no relay connection left on the old secret;
//  5. retire the old secret at the relay through the retire hook.
//
// A state file records each step, so that an interrupted rotation can be
// resumed (Resume) or rolled back (Abort), and a second rotation of the
// same entry refuses to start while one is unfinished.
//
// It promises:
//   - no secret is ever in clear outside memory: the state file (mode
//     0600) holds the previous and the new entry only sealed to the
//     recipient list (age file) or as Vault references; hooks get the
//     secret on standard input, never in their arguments or environment;
//     what a hook prints is shown with every secret it knows replaced;
//   - the new secret is kept, sealed, before the set hook runs, so that
//     whatever a crash leaves can be resumed or rolled back;
//   - nothing is resealed unless the set hook said the relay accepts the
//     new secret, and the old secret is retired only when every agent of
//     the fleet holds the new generation with no connection on the old
//     secret; an agent that does not is named, and nothing is retired.
package rotate
