package main

import "errors"

const keygenUsage = "sealrelay keygen ..."

func cmdKeygen(e *env, args []string) error {
	return errors.New("keygen is not implemented yet")
}
