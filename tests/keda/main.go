// Command strata-keda-lag drives KEDA's own Kafka scaler (the package
// github.com/kedacore/keda/v2/pkg/scalers, unchanged) against a Kafka-compatible
// broker and prints the lag it computes, so that a test can compare it with what
// Strata reports for the same group (the ConsumerGroup status and the External
// metric the operator serves to the HPA).
//
//	strata-keda-lag setup <bootstrap> <topic> <produce> <commits>
//	    creates <topic> with one partition per comma-separated count of <produce>
//	    (records produced to that partition) and commits offsets for groups:
//	    <commits> is group=p:offset[/p:offset...][;group=...]; a group with no
//	    pairs (group=) commits nothing.
//	strata-keda-lag lag <bootstrap> <topic> <group> <lagThreshold>
//	    prints one JSON object: the scaler's metric value for each trigger
//	    configuration named in configs below.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-logr/logr"
	"github.com/kedacore/keda/v2/pkg/scalers"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// configs are the trigger settings the lag is computed with, besides
// bootstrapServers, consumerGroup, topic and lagThreshold.
var configs = map[string]map[string]string{
	// KEDA's defaults: a partition without a committed offset counts 1
	// (offsetResetPolicy latest), the total is capped at lagThreshold × partitions.
	"default": {},
	// Uncommitted partitions count 0, as Strata counts them.
	"scaleToZeroOnInvalidOffset": {"scaleToZeroOnInvalidOffset": "true"},
	// The same without the cap: the raw sum of the per-partition lag.
	"scaleToZeroOnInvalidOffset,allowIdleConsumers": {"scaleToZeroOnInvalidOffset": "true", "allowIdleConsumers": "true"},
	// Uncommitted partitions count 1, uncapped.
	"allowIdleConsumers": {"allowIdleConsumers": "true"},
	// Uncommitted partitions count their retained records (end − start), uncapped.
	"offsetResetPolicy=earliest,allowIdleConsumers": {"offsetResetPolicy": "earliest", "allowIdleConsumers": "true"},
	// A newer protocol version than the scaler's default (1.0.0).
	"version=4.0.0,scaleToZeroOnInvalidOffset": {"version": "4.0.0", "scaleToZeroOnInvalidOffset": "true"},
}

func main() {
	logf.SetLogger(logr.Discard())
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "strata-keda-lag:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 5 && args[0] == "setup":
		return setup(args[1], args[2], args[3], args[4])
	case len(args) == 5 && args[0] == "lag":
		threshold, err := strconv.ParseInt(args[4], 10, 64)
		if err != nil {
			return fmt.Errorf("lagThreshold %q: %w", args[4], err)
		}
		out := map[string]int64{}
		for name, extra := range configs {
			v, err := lag(args[1], args[2], args[3], threshold, extra)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			out[name] = v
		}
		return json.NewEncoder(os.Stdout).Encode(out)
	default:
		return fmt.Errorf("usage: setup <bootstrap> <topic> <produce> <commits> | lag <bootstrap> <topic> <group> <lagThreshold>")
	}
}

// lag builds the scaler as KEDA's operator does for a ScaledObject trigger of
// type kafka and returns the metric value it reports.
func lag(bootstrap, topic, group string, threshold int64, extra map[string]string) (int64, error) {
	meta := map[string]string{
		"bootstrapServers": bootstrap,
		"consumerGroup":    group,
		"topic":            topic,
		"lagThreshold":     strconv.FormatInt(threshold, 10),
	}
	for k, v := range extra {
		meta[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	scaler, err := scalers.NewKafkaScaler(ctx, &scalersconfig.ScalerConfig{
		TriggerMetadata:   meta,
		TriggerType:       "kafka",
		GlobalHTTPTimeout: 10 * time.Second,
	})
	if err != nil {
		return 0, err
	}
	defer scaler.Close(ctx)
	specs := scaler.GetMetricSpecForScaling(ctx)
	if len(specs) != 1 || specs[0].External == nil {
		return 0, fmt.Errorf("unexpected metric spec %v", specs)
	}
	values, _, err := scaler.GetMetricsAndActivity(ctx, specs[0].External.Metric.Name)
	if err != nil {
		return 0, err
	}
	if len(values) != 1 {
		return 0, fmt.Errorf("expected one metric value, got %d", len(values))
	}
	return values[0].Value.MilliValue() / 1000, nil
}

func setup(bootstrap, topic, produce, commits string) error {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	client, err := sarama.NewClient([]string{bootstrap}, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	counts := strings.Split(produce, ",")
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return err
	}
	detail := &sarama.TopicDetail{NumPartitions: int32(len(counts)), ReplicationFactor: 1}
	if err := admin.CreateTopic(topic, detail, false); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	if err := client.RefreshMetadata(topic); err != nil {
		return err
	}
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		return err
	}
	for p, c := range counts {
		n, err := strconv.Atoi(c)
		if err != nil {
			return fmt.Errorf("produce count %q: %w", c, err)
		}
		for i := 0; i < n; i++ {
			msg := &sarama.ProducerMessage{Topic: topic, Partition: int32(p), Value: sarama.StringEncoder(fmt.Sprintf("r%d", i))}
			if _, _, err := producer.SendMessage(msg); err != nil {
				return fmt.Errorf("produce to %s-%d: %w", topic, p, err)
			}
		}
	}
	if err := producer.Close(); err != nil {
		return err
	}
	for _, spec := range strings.Split(commits, ";") {
		group, pairs, ok := strings.Cut(spec, "=")
		if !ok {
			return fmt.Errorf("commit spec %q: want group=p:offset/...", spec)
		}
		if err := commit(client, topic, group, pairs); err != nil {
			return fmt.Errorf("group %s: %w", group, err)
		}
	}
	return nil
}

// commit records offsets for group without joining it (as an admin tool does).
func commit(client sarama.Client, topic, group, pairs string) error {
	if pairs == "" {
		return nil
	}
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		return err
	}
	var poms []sarama.PartitionOffsetManager
	for _, pair := range strings.Split(pairs, "/") {
		ps, os, ok := strings.Cut(pair, ":")
		p, perr := strconv.Atoi(ps)
		o, oerr := strconv.ParseInt(os, 10, 64)
		if !ok || perr != nil || oerr != nil {
			return fmt.Errorf("offset %q: want partition:offset", pair)
		}
		pom, err := om.ManagePartition(topic, int32(p))
		if err != nil {
			return err
		}
		pom.MarkOffset(o, "")
		poms = append(poms, pom)
	}
	om.Commit()
	for _, pom := range poms {
		select {
		case err := <-pom.Errors():
			return err
		default:
		}
		pom.AsyncClose()
	}
	return om.Close()
}
