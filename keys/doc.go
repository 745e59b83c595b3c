// Package keys holds a server's identity (its age secret key, as age-keygen
// writes it) and the recipient list: the servers a credential file is sealed
// to.
//
// Loading an identity refuses a file that group or others can read, as ssh
// refuses such private keys. No error from this package quotes key material:
// a line that fails to parse is named by its number, never by its content.
package keys
