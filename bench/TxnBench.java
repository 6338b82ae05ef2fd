// Producer throughput with and without transactions (bench/txn.sh): sends RECORDS
// records of 1 KiB with acks=all and idempotence, plain (PER_TXN = 0) or in
// transactions of PER_TXN records each, and prints "records/s MB/s".
import java.util.Properties;
import java.util.UUID;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class TxnBench {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        long records = Long.parseLong(args[2]);
        int perTxn = Integer.parseInt(args[3]);
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, 65536);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        if (perTxn > 0) p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "bench-" + UUID.randomUUID());
        byte[] value = new byte[1024];
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            if (perTxn > 0) producer.initTransactions();
            long start = System.nanoTime();
            long sent = 0;
            while (sent < records) {
                long n = perTxn > 0 ? Math.min(perTxn, records - sent) : records;
                if (perTxn > 0) producer.beginTransaction();
                for (long i = 0; i < n; i++) producer.send(new ProducerRecord<>(topic, value));
                if (perTxn > 0) producer.commitTransaction(); else producer.flush();
                sent += n;
            }
            double secs = (System.nanoTime() - start) / 1e9;
            System.out.printf("%.0f %.1f%n", records / secs, records * 1024 / secs / 1e6);
        }
    }
}
