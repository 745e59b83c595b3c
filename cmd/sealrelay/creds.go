package main

import "errors"

const credsUsage = "sealrelay creds ..."

func cmdCreds(e *env, args []string) error {
	return errors.New("creds is not implemented yet")
}
