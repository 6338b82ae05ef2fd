// A Kafka Streams application (kafka-streams 4.1.1) with
// processing.guarantee=exactly_once_v2 against a Strata broker: copies every record
// of the input topic to the output topic with its value upper-cased. The test
// (tests/clients/test_txn_tools.py) kills it -9 mid-stream, restarts it, and checks
// that the read_committed output holds every input record exactly once.
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

public class StreamsCopy {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], input = args[1], output = args[2], appId = args[3], stateDir = args[4];
        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
            .mapValues(v -> v.toUpperCase())
            .to(output, Produced.with(Serdes.String(), Serdes.String()));
        StreamsApp.run(b.build(), StreamsApp.exactlyOnce(bootstrap, appId, stateDir));
    }
}
