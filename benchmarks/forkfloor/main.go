// Command forkfloor times the external commands the Go reference driver forks in one node
// publish/unpublish cycle, forked from Go with os/exec as k8s.io/mount-utils does:
//
//	fs:    mount -o bind SRC DST; umount DST
//	block: losetup -j SRC; mount -o bind DEVICE DST; umount DST   (DST is a file)
//
// It prints one JSON object: {"cycles": [seconds, ...], "wall": seconds}. Written for
// benchmarks/run.py; it is a lower bound for the reference driver's cycle (no gRPC, no state).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return string(out), nil
}

func cycle(mode, src, dst string) error {
	source := src
	if mode == "block" {
		out, err := run("losetup", "-j", src)
		if err != nil {
			return err
		}
		source = strings.SplitN(out, ":", 2)[0]
	}
	if _, err := run("mount", "-o", "bind", source, dst); err != nil {
		return err
	}
	_, err := run("umount", dst)
	return err
}

func main() {
	mode := flag.String("mode", "fs", "fs or block")
	src := flag.String("src", "", "bind source: a directory (fs) or a loop-attached file (block)")
	dir := flag.String("dir", "", "directory for the workers' targets")
	n := flag.Int("n", 100, "cycles per worker")
	c := flag.Int("c", 1, "concurrent workers")
	flag.Parse()

	var mu sync.Mutex
	var cycles []float64
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *c; w++ {
		dst := filepath.Join(*dir, fmt.Sprintf("target-%d", w))
		var err error
		if *mode == "block" {
			err = os.WriteFile(dst, nil, 0o600)
		} else {
			err = os.MkdirAll(dst, 0o750)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < *n; i++ {
				t := time.Now()
				err := cycle(*mode, *src, dst)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				cycles = append(cycles, time.Since(t).Seconds())
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, firstErr)
		os.Exit(1)
	}
	out, _ := json.Marshal(map[string]any{"cycles": cycles, "wall": time.Since(start).Seconds()})
	fmt.Println(string(out))
}
