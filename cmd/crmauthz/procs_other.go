//go:build !unix

package main

import "time"

// processCPU cannot be read here: the adaptive GOMAXPROCS is not applied.
func processCPU() time.Duration { return -1 }
