// Command sarama_hash prints the partition Sarama's default hash partitioner picks for a fixed
// set of keys and partition counts, as JSON lines {"key_hex": ..., "partitions": n, "partition": p}.
//
// It reproduces sarama's hashPartitioner.Partition (partitioner.go, NewHashPartitioner, the
// default path: neither referenceAbs nor hashUnsigned) with nothing but the standard library,
// so the Python port can be checked against Go's own arithmetic (int32 conversion, truncated
// remainder, negation). Generated with:
//
//	cd tests/producer/data && go run sarama_hash.go > sarama_hash_table.jsonl
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
)

// partition is sarama's hashPartitioner.Partition for a non-nil key.
func partition(key []byte, numPartitions int32) int32 {
	hasher := fnv.New32a()
	hasher.Reset()
	_, _ = hasher.Write(key)
	p := (int32(hasher.Sum32())) % numPartitions
	if p < 0 {
		p = -p
	}
	return p
}

type row struct {
	KeyHex     string `json:"key_hex"`
	Partitions int32  `json:"partitions"`
	Partition  int32  `json:"partition"`
	Sum32      uint32 `json:"fnv1a32"`
}

func main() {
	keys := [][]byte{
		{},
		[]byte("a"), []byte("b"), []byte("key"), []byte("user-1"), []byte("user-2"),
		[]byte("user-42"), []byte("order:1234567890"), []byte("hello world"),
		[]byte("tRPC-Go"), []byte("中文键"), []byte("ключ"), []byte("🙂"),
		{0x00}, {0xff}, {0x00, 0x00, 0x00, 0x00}, {0xde, 0xad, 0xbe, 0xef},
		[]byte("The quick brown fox jumps over the lazy dog"),
	}
	for i := 0; i < 40; i++ {
		keys = append(keys, []byte(fmt.Sprintf("k%d", i*7919)))
	}
	counts := []int32{1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 31, 64, 100, 1000, 2147483647}
	enc := json.NewEncoder(os.Stdout)
	for _, k := range keys {
		h := fnv.New32a()
		_, _ = h.Write(k)
		for _, n := range counts {
			_ = enc.Encode(row{hex.EncodeToString(k), n, partition(k, n), h.Sum32()})
		}
	}
}
