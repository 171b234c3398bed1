//go:build !race

package policy

// raceDetector tells whether the tests run with the race detector (-race),
// under which the long generated series are cut short.
const raceDetector = false
