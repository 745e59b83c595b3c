package main

import "errors"

const checkUsage = "sealrelay check ..."

func cmdCheck(e *env, args []string) error {
	return errors.New("check is not implemented yet")
}
