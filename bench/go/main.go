// The Go Sarama peer of the benchmark harness (bench/compare.py builds and runs it).
//
// Sarama configured as the tRPC-Go kafka plugin configures it by default (requiredAcks=-1,
// random partitioner, send at once, maxMessageBytes 131072, fetchDefault 524288, fetchMax
// 1048576, maxWaitTime 1s, range strategy), compression none like the Python variants.
//
//	sarama-bench -mode produce-async -bootstrap HOST:PORT -topic T -messages N [-max-seconds S] [-successes=false]
//	sarama-bench -mode produce-sync-latency -bootstrap HOST:PORT -topic T -samples N
//	sarama-bench -mode consume-group -bootstrap HOST:PORT -topic T -group G -messages N
//
// Each run prints one JSON object on stdout, as the Python variants do.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/IBM/sarama"
)

var value = []byte(strings.Repeat("x", 100))

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V3_6_0_0
	c.ClientID = "trpc-kafka-bench-go"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Partitioner = sarama.NewRandomPartitioner
	c.Producer.Compression = sarama.CompressionNone
	c.Producer.MaxMessageBytes = 131072
	c.Producer.Retry.Max = 3
	c.Producer.Retry.Backoff = 100 * time.Millisecond
	// The plugin's async producer reports every message to its callbacks, as ours does.
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Consumer.Fetch.Default = 524288
	c.Consumer.Fetch.Max = 1048576
	c.Consumer.MaxWaitTime = time.Second
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	return c
}

// peakRSSMB is the process's VmHWM, as the Python children report it.
func peakRSSMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(fields[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// cpuSeconds is the process's user and system CPU time so far (every thread), as Python's
// time.process_time() counts it.
func cpuSeconds() float64 {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return float64(u.Utime.Nano()+u.Stime.Nano()) / 1e9
}

func emit(result map[string]any) {
	result["peak_rss_mb"] = peakRSSMB()
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "sarama-bench: "+format+"\n", args...)
	os.Exit(1)
}

// produceAsync sends n messages through an AsyncProducer, draining successes and errors
// concurrently, until every message is acknowledged (or the time cap stops the sending).
// successes=false: Return.Successes off (errors only), the like-for-like of a Python producer
// that reports failures only; AsyncClose still waits for every message.
func produceAsync(brokers []string, topic string, n int, maxSeconds float64, successes bool) {
	c := config()
	c.Producer.Return.Successes = successes
	p, err := sarama.NewAsyncProducer(brokers, c)
	if err != nil {
		fail("new async producer: %v", err)
	}
	// Connect and fetch the topic's metadata before timing, as the Python variants do.
	if successes {
		p.Input() <- &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(value)}
		select {
		case <-p.Successes():
		case e := <-p.Errors():
			fail("first send: %v", e.Err)
		}
	} else {
		warm, err := sarama.NewSyncProducer(brokers, config())
		if err != nil {
			fail("new sync producer: %v", err)
		}
		if _, _, err := warm.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(value)}); err != nil {
			fail("first send: %v", err)
		}
		warm.Close()
	}
	var acked, failed atomic.Int64
	done := make(chan struct{})
	errorsDone := make(chan struct{})
	var firstErr atomic.Value
	if successes {
		go func() {
			for range p.Successes() {
				acked.Add(1)
			}
			close(done)
		}()
	} else {
		close(done)
	}
	go func() {
		for e := range p.Errors() {
			if failed.Add(1) == 1 {
				firstErr.Store(e.Err.Error())
			}
		}
		close(errorsDone)
	}()
	cpu := cpuSeconds()
	start := time.Now()
	deadline := start.Add(time.Duration(maxSeconds * float64(time.Second)))
	sent := 0
	for sent < n {
		p.Input() <- &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(value)}
		sent++
		if sent%1000 == 0 && maxSeconds > 0 && time.Now().After(deadline) {
			break
		}
	}
	p.AsyncClose() // flushes; Successes and Errors are closed once everything is reported
	<-done
	<-errorsDone
	seconds := time.Since(start).Seconds()
	cpu = cpuSeconds() - cpu
	if f := failed.Load(); f > 0 {
		fail("%d of %d sends failed: %v", f, sent, firstErr.Load())
	}
	delivered := acked.Load()
	if !successes {
		delivered = int64(sent) // every message ended, none failed
	}
	emit(map[string]any{
		"messages": delivered, "seconds": seconds, "rate": float64(delivered) / seconds,
		"capped": sent < n, "cpu_us_per_msg": cpu / float64(sent) * 1e6,
	})
}

// produceSyncLatency times single acked sends, one at a time.
func produceSyncLatency(brokers []string, topic string, samples int) {
	p, err := sarama.NewSyncProducer(brokers, config())
	if err != nil {
		fail("new sync producer: %v", err)
	}
	defer p.Close()
	msg := func() *sarama.ProducerMessage {
		return &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(value)}
	}
	if _, _, err := p.SendMessage(msg()); err != nil {
		fail("first send: %v", err)
	}
	out := make([]float64, 0, samples)
	for i := 0; i < samples; i++ {
		start := time.Now()
		if _, _, err := p.SendMessage(msg()); err != nil {
			fail("send: %v", err)
		}
		out = append(out, time.Since(start).Seconds())
	}
	sort.Float64s(out)
	at := func(q float64) float64 {
		i := int(q * float64(len(out)))
		if i >= len(out) {
			i = len(out) - 1
		}
		return out[i] * 1000
	}
	emit(map[string]any{"samples": len(out), "p50_ms": at(0.50), "p99_ms": at(0.99)})
}

type groupHandler struct {
	target       int64
	seen         atomic.Int64
	first, last  atomic.Int64 // UnixNano
	cancel       context.CancelFunc
	reachedLimit atomic.Bool
}

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		sess.MarkMessage(msg, "")
		h.first.CompareAndSwap(0, time.Now().UnixNano())
		seen := h.seen.Add(1)
		if seen == h.target {
			h.last.CompareAndSwap(0, time.Now().UnixNano())
			h.cancel()
			return nil
		}
	}
	return nil
}

// consumeGroup drains n messages as one member of a fresh consumer group, marking each.
func consumeGroup(brokers []string, topic, group string, n int, maxSeconds, joinSeconds float64) {
	begin := time.Now()
	g, err := sarama.NewConsumerGroup(brokers, group, config())
	if err != nil {
		fail("new consumer group: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &groupHandler{target: int64(n), cancel: cancel}
	// The cap counts from the first message (a busy machine slows the group join); with no
	// message joinSeconds after the start, give up.
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			first := h.first.Load()
			now := time.Now()
			late := first == 0 && now.Sub(begin).Seconds() > joinSeconds
			capped := first != 0 && maxSeconds > 0 && float64(now.UnixNano()-first)/1e9 > maxSeconds
			if late || capped {
				if h.last.CompareAndSwap(0, now.UnixNano()) {
					h.reachedLimit.Store(true)
				}
				cancel()
				return
			}
		}
	}()
	go func() {
		for err := range g.Errors() {
			fmt.Fprintf(os.Stderr, "sarama-bench: consumer group: %v\n", err)
		}
	}()
	for ctx.Err() == nil {
		if err := g.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
			fail("consume: %v", err)
		}
	}
	if err := g.Close(); err != nil { // commits the marked offsets
		fail("close: %v", err)
	}
	seen := h.seen.Load()
	if seen == 0 || h.first.Load() == 0 {
		fail("no message received in %.0f s", joinSeconds)
	}
	seconds := float64(h.last.Load()-h.first.Load()) / 1e9
	emit(map[string]any{
		"messages": seen, "seconds": seconds, "rate": float64(seen) / seconds,
		"total_s": time.Since(begin).Seconds(), "capped": h.reachedLimit.Load(),
	})
}

func main() {
	mode := flag.String("mode", "", "produce-async | produce-sync-latency | consume-group")
	bootstrap := flag.String("bootstrap", "", "HOST:PORT[,HOST:PORT...]")
	topic := flag.String("topic", "", "topic")
	group := flag.String("group", "", "consumer group (consume-group)")
	messages := flag.Int("messages", 1000000, "messages to send or to drain")
	samples := flag.Int("samples", 300, "acked sends to time (produce-sync-latency)")
	maxSeconds := flag.Float64("max-seconds", 0, "stop sending, or draining after the first message, after this long (0: never)")
	successes := flag.Bool("successes", true, "produce-async: read a success report per message (Return.Successes)")
	joinSeconds := flag.Float64("join-seconds", 60, "consume-group: give up with no message this long after the start")
	flag.Parse()
	if *bootstrap == "" || *topic == "" {
		fail("-bootstrap and -topic are required")
	}
	brokers := strings.Split(*bootstrap, ",")
	switch *mode {
	case "produce-async":
		produceAsync(brokers, *topic, *messages, *maxSeconds, *successes)
	case "produce-sync-latency":
		produceSyncLatency(brokers, *topic, *samples)
	case "consume-group":
		if *group == "" {
			fail("-group is required for consume-group")
		}
		consumeGroup(brokers, *topic, *group, *messages, *maxSeconds, *joinSeconds)
	default:
		fail("-mode %q: expected produce-async, produce-sync-latency or consume-group", *mode)
	}
}
