package main

import "errors"

const queueUsage = "sealrelay queue ..."

func cmdQueue(e *env, args []string) error {
	return errors.New("queue is not implemented yet")
}
