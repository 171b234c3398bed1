//go:build race

package index

// raceBuild: the race detector is on (it changes allocation counts).
const raceBuild = true
