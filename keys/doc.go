// Package keys holds a server's identity (its age secret key, as age-keygen
// writes it) and the recipient list: the servers a credential file is sealed
// to.
//
// Loading an identity refuses a file that group or others can read, as ssh
// refuses such private keys. An identity may also be a systemd credential
// ("credential:NAME" in $CREDENTIALS_DIRECTORY), checked against the layout
// systemd writes, or name a key held by an age plugin (a YubiKey, a TPM),
// which is used through the plugin and never enters this process; a plugin
// that asks for a PIN or a confirmation is refused, since nobody is there
// to answer. No error from this package quotes key material: a line that
// fails to parse is named by its number, never by its content.
package keys
