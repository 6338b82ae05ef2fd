// An OpenMessaging-Benchmark-like workload in one JVM (bench/cpu.sh): PRODUCERS
// producers send 1 KiB records at a fixed total RATE (records/s) to TOPIC with
// acks=all, linger.ms=1, batch.size=131072, while CONSUMERS consumers in one group
// read them. The first WARM seconds are a warm-up whose samples are dropped; then
// SECONDS are measured. Prints one JSON line: the achieved rate, the publish latency
// (send() to the acknowledgement) and the end-to-end latency (send() to a consumer's
// poll returning the record; producers and consumers share the JVM's nanoTime).
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class OmbBench {
    /** Latencies in microseconds, appended from many threads. */
    static final class Samples {
        private long[] v = new long[1 << 16];
        private int n;

        synchronized void add(long micros) {
            if (n == v.length) v = Arrays.copyOf(v, n * 2);
            v[n++] = micros;
        }

        synchronized String percentiles() {
            long[] s = Arrays.copyOf(v, n);
            Arrays.sort(s);
            return String.format("{\"count\": %d, \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"p999_ms\": %.2f, \"max_ms\": %.2f}",
                    n, at(s, 0.5), at(s, 0.99), at(s, 0.999), n == 0 ? 0.0 : s[n - 1] / 1000.0);
        }

        private static double at(long[] s, double q) {
            return s.length == 0 ? Double.NaN : s[Math.min(s.length - 1, (int) (q * s.length))] / 1000.0;
        }
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int producers = Integer.parseInt(args[2]), consumers = Integer.parseInt(args[3]);
        double rate = Double.parseDouble(args[4]);
        int warm = Integer.parseInt(args[5]), seconds = Integer.parseInt(args[6]);
        Samples publish = new Samples(), e2e = new Samples();
        AtomicBoolean stop = new AtomicBoolean();
        AtomicLong sent = new AtomicLong(), errors = new AtomicLong(), assigned = new AtomicLong();
        long measureFrom = System.nanoTime() + 3_600_000_000_000L; // set once consumers are in
        final long[] from = {measureFrom};

        List<Thread> threads = new ArrayList<>();
        for (int c = 0; c < consumers; c++) {
            Thread t = new Thread(() -> {
                Properties p = new Properties();
                p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
                p.put(ConsumerConfig.GROUP_ID_CONFIG, "omb-" + topic);
                p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
                p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
                p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
                try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
                    consumer.subscribe(List.of(topic));
                    boolean counted = false;
                    while (!stop.get()) {
                        var records = consumer.poll(Duration.ofMillis(100));
                        if (!counted && !consumer.assignment().isEmpty()) {
                            counted = true;
                            assigned.addAndGet(consumer.assignment().size());
                        }
                        long now = System.nanoTime();
                        for (ConsumerRecord<byte[], byte[]> r : records) {
                            long ts = ByteBuffer.wrap(r.value()).getLong();
                            if (ts >= from[0]) e2e.add((now - ts) / 1000);
                        }
                    }
                }
            });
            t.start();
            threads.add(t);
        }
        // The group owns every partition before anything is sent.
        long giveUp = System.nanoTime() + 60_000_000_000L;
        while (assigned.get() == 0 && System.nanoTime() < giveUp) Thread.sleep(50);
        Thread.sleep(1000);

        long start = System.nanoTime();
        from[0] = start + warm * 1_000_000_000L;
        long end = from[0] + seconds * 1_000_000_000L;
        double perProducer = rate / producers;
        List<Thread> senders = new ArrayList<>();
        for (int i = 0; i < producers; i++) {
            Thread t = new Thread(() -> {
                Properties p = new Properties();
                p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
                p.put(ProducerConfig.ACKS_CONFIG, "all");
                p.put(ProducerConfig.LINGER_MS_CONFIG, 1);
                p.put(ProducerConfig.BATCH_SIZE_CONFIG, 131072);
                p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
                p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
                try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                    long interval = (long) (1e9 / perProducer);
                    long next = System.nanoTime();
                    while (next < end) {
                        long now = System.nanoTime();
                        if (now < next) {
                            LockSupport.parkNanos(next - now);
                            continue;
                        }
                        byte[] value = new byte[1024];
                        long ts = System.nanoTime();
                        ByteBuffer.wrap(value).putLong(ts);
                        producer.send(new ProducerRecord<>(topic, value), (md, e) -> {
                            if (e != null) errors.incrementAndGet();
                            else if (ts >= from[0]) publish.add((System.nanoTime() - ts) / 1000);
                        });
                        if (ts >= from[0]) sent.incrementAndGet();
                        next += interval;
                    }
                    producer.flush();
                }
            });
            t.start();
            senders.add(t);
        }
        for (Thread t : senders) t.join();
        // Behind schedule, the producers send the same records later: the rate is
        // what they sent over the time they took.
        double elapsed = (System.nanoTime() - from[0]) / 1e9;
        Thread.sleep(2000); // the consumers read the tail
        stop.set(true);
        for (Thread t : threads) t.join();
        System.out.printf("{\"target_rate\": %.0f, \"achieved_rate\": %.0f, \"errors\": %d, \"publish\": %s, \"e2e\": %s}%n",
                rate, sent.get() / elapsed, errors.get(), publish.percentiles(), e2e.percentiles());
    }
}
