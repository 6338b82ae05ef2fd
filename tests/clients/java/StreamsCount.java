// A Kafka Streams application (kafka-streams 4.1.1) with a state store: counts the
// records of each key of the input topic (exactly_once_v2, a persistent store named
// "counts" whose changelog topic Streams creates compacted) and writes every new
// count to the output topic as "key=count". Small changelog segments and a low
// dirty ratio let the broker's log cleaner compact the changelog while it runs. The
// test (tests/clients/test_txn_tools.py) kills it -9, deletes its state directory
// and restarts it: the counts must continue from the restored store.
import java.util.Properties;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

public class StreamsCount {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], input = args[1], output = args[2], appId = args[3], stateDir = args[4];
        Properties p = StreamsApp.exactlyOnce(bootstrap, appId, stateDir);
        // No record cache: every update of a count reaches the changelog.
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        // Configs of the internal topics Streams creates (the changelog among them).
        p.put(StreamsConfig.topicPrefix("segment.bytes"), 16384);
        p.put(StreamsConfig.topicPrefix("segment.ms"), 500);
        p.put(StreamsConfig.topicPrefix("min.cleanable.dirty.ratio"), "0.01");
        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
            .groupByKey()
            .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts"))
            .toStream()
            .mapValues((k, n) -> k + "=" + n)
            .to(output, Produced.with(Serdes.String(), Serdes.String()));
        StreamsApp.run(b.build(), p);
    }
}
