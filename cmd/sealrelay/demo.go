package main

import "errors"

const demoUsage = "sealrelay demo ..."

func cmdDemo(e *env, args []string) error {
	return errors.New("demo is not implemented yet")
}
