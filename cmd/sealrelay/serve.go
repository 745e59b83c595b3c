package main

import "errors"

const serveUsage = "sealrelay serve ..."

func cmdServe(e *env, args []string) error {
	return errors.New("serve is not implemented yet")
}
