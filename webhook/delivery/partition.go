package delivery

import "hash/fnv"

// Partition maps a conversation key to one of n partitions (FNV-1a), the same on every
// receiver and across restarts. A spool shared by many receivers (JetStream) orders a
// key by giving each partition one consumer with one message in flight (MaxAckPending
// 1): the copies of one key then share a partition and go one at a time, in stream
// order, whichever receiver stored them. The key "" (a callback without a conversation)
// is partition -1: deliver it unordered.
func Partition(key string, n int) int {
	if key == "" || n <= 0 {
		return -1
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}
