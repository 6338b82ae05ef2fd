// Kafka's Java client (kafka-clients 4.1.1) against a Strata broker: transactional
// produce, read_committed and read_uncommitted consumption, zombie fencing. Prints
// one line per check ("COUNT <isolation> <n>", "FENCED <exception>") for the test
// (tests/clients/test_txn_tools.py) to assert on.
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.UUID;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnClient {
    static KafkaProducer<String, String> producer(String bootstrap, String txnId) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        producer.initTransactions();
        return producer;
    }

    static List<String> readAll(String bootstrap, String topic, String isolation, int expect) {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, "java-reader-" + UUID.randomUUID());
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<String> out = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long deadline = System.currentTimeMillis() + 30_000;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    out.add(r.value());
                }
                // Past the last stable offset / high watermark and enough seen.
                if (out.size() >= expect && consumer.position(tp) >= consumer.endOffsets(List.of(tp)).get(tp)) {
                    break;
                }
            }
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0], bootstrap = args[1], topic = args[2];
        String txnId = "java-" + UUID.randomUUID();
        if (mode.equals("commit-abort")) {
            try (KafkaProducer<String, String> p = producer(bootstrap, txnId)) {
                p.beginTransaction();
                for (int i = 0; i < 10; i++) p.send(new ProducerRecord<>(topic, 0, "k" + i, "committed-" + i));
                p.commitTransaction();
                p.beginTransaction();
                for (int i = 0; i < 10; i++) p.send(new ProducerRecord<>(topic, 0, "k" + i, "aborted-" + i));
                p.flush();
                p.abortTransaction();
                p.beginTransaction();
                for (int i = 0; i < 5; i++) p.send(new ProducerRecord<>(topic, 0, "k" + i, "later-" + i));
                p.commitTransaction();
            }
            List<String> committed = readAll(bootstrap, topic, "read_committed", 15);
            System.out.println("COUNT read_committed " + committed.size());
            System.out.println("ABORTED_SEEN read_committed " + committed.stream().filter(v -> v.startsWith("aborted-")).count());
            List<String> all = readAll(bootstrap, topic, "read_uncommitted", 25);
            System.out.println("COUNT read_uncommitted " + all.size());
        } else if (mode.equals("fence")) {
            KafkaProducer<String, String> zombie = producer(bootstrap, txnId);
            zombie.beginTransaction();
            zombie.send(new ProducerRecord<>(topic, 0, "z", "zombie")).get();
            KafkaProducer<String, String> fresh = producer(bootstrap, txnId);
            try {
                // Its EndTxn carries the epoch the new instance bumped past.
                zombie.commitTransaction();
                System.out.println("NOT_FENCED");
            } catch (ProducerFencedException e) {
                System.out.println("FENCED " + e.getClass().getSimpleName());
            } catch (KafkaException e) {
                Throwable cause = e.getCause();
                System.out.println((cause instanceof ProducerFencedException ? "FENCED " : "OTHER ") + e);
            } finally {
                zombie.close(Duration.ofSeconds(5));
            }
            fresh.beginTransaction();
            fresh.send(new ProducerRecord<>(topic, 0, "f", "fresh"));
            fresh.commitTransaction();
            fresh.close();
            List<String> committed = readAll(bootstrap, topic, "read_committed", 1);
            System.out.println("VALUES " + String.join(",", committed));
        }
    }
}
