// Kafka's Java consumer (kafka-clients 4.1.1) detecting log truncation after a leader
// change (KIP-320): `<bootstrap> <topic>` reads 20 records of partition 0, prints
// "CONSUMED <n> epoch=<leader epoch of the last>", waits for a line on stdin (the
// test changes the leader meanwhile), then polls: the position is validated with
// OffsetForLeaderEpoch against the new leader, which must raise
// LogTruncationException ("TRUNCATED <partition> at=<position> divergent=<offset>");
// it then resumes from the divergent offset and prints "RESUMED <values>" once it has
// read 5 records there. Exits non-zero without a truncation within 90 s.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.LogTruncationException;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class TruncationCheck {
    public static void main(String[] args) throws Exception {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        c.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "1000");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        TopicPartition tp = new TopicPartition(args[1], 0);
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            consumer.assign(List.of(tp));
            consumer.seek(tp, 0);
            int n = 0;
            int epoch = -1;
            long deadline = System.currentTimeMillis() + 60_000;
            while (n < 20 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    n++;
                    epoch = r.leaderEpoch().orElse(-1);
                }
            }
            System.out.println("CONSUMED " + n + " epoch=" + epoch);
            System.out.flush();
            new BufferedReader(new InputStreamReader(System.in)).readLine();

            boolean truncated = false;
            List<String> resumed = new ArrayList<>();
            deadline = System.currentTimeMillis() + 90_000;
            while (System.currentTimeMillis() < deadline) {
                try {
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                        if (!truncated) {
                            System.out.println("UNEXPECTED record before truncation: " + r);
                            System.exit(2);
                        }
                        resumed.add(r.value());
                    }
                } catch (LogTruncationException e) {
                    Map<TopicPartition, OffsetAndMetadata> divergent = e.divergentOffsets();
                    long at = e.offsetOutOfRangePartitions().get(tp);
                    System.out.println("TRUNCATED " + tp + " at=" + at + " divergent="
                            + divergent.get(tp).offset());
                    consumer.seek(tp, divergent.get(tp));
                    truncated = true;
                }
                if (resumed.size() >= 5) {
                    System.out.println("RESUMED " + String.join(",", resumed));
                    return;
                }
            }
            System.out.println(truncated ? "RESUMED-NOTHING " + resumed : "NO-TRUNCATION");
            System.exit(1);
        }
    }
}
