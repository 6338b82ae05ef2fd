// Kafka's Java producer and consumer (kafka-clients 4.1.1) over SASL_SSL:
// `<bootstrap> <topic> <ca.pem> <mechanism> <user> <password> <seconds>` sends one
// record every 100 ms for <seconds> seconds on one producer (so a short
// connections.max.reauth.ms makes it re-authenticate, KIP-368, several times on the
// same connections), prints "PRODUCED <n>", then reads the topic from the start and
// prints "CONSUMED <n>" once it has every record. Exits non-zero on any send error
// or when the records do not all arrive within 60 s. With OAUTHBEARER, <user> and
// <password> are an OAuth client's id and secret (see security()).
import java.time.Duration;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class SaslClient {
    static Properties security(String bootstrap, String ca, String mechanism, String user, String password) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("security.protocol", "SASL_SSL");
        p.put("sasl.mechanism", mechanism);
        if (mechanism.equals("OAUTHBEARER")) {
            // <user> and <password> are an OAuth client's id and secret; Kafka's login
            // handler trades them for a JWT at the token endpoint (client_credentials)
            // given by the system property strata.token.endpoint.
            p.put("sasl.login.callback.handler.class",
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler");
            p.put("sasl.oauthbearer.token.endpoint.url", System.getProperty("strata.token.endpoint"));
            p.put("sasl.jaas.config", "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required"
                + " clientId=\"" + user + "\" clientSecret=\"" + password + "\";");
        } else {
            String module = mechanism.equals("PLAIN")
                ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                : "org.apache.kafka.common.security.scram.ScramLoginModule";
            p.put("sasl.jaas.config", module + " required username=\"" + user + "\" password=\"" + password + "\";");
        }
        p.put("ssl.truststore.type", "PEM");
        p.put("ssl.truststore.location", ca);
        return p;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int seconds = Integer.parseInt(args[6]);
        Properties p = security(bootstrap, args[2], args[3], args[4], args[5]);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        int n = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            long end = System.currentTimeMillis() + seconds * 1000L;
            while (System.currentTimeMillis() < end) {
                // Each send is awaited: a connection closed under the producer fails it.
                producer.send(new ProducerRecord<>(topic, "k", Integer.toString(n))).get();
                n++;
                Thread.sleep(100);
            }
        }
        System.out.println("PRODUCED " + n);
        System.out.flush();

        Properties c = security(bootstrap, args[2], args[3], args[4], args[5]);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, "sasl-java-" + topic);
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        int got = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60_000;
            while (got < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    got++;
                }
            }
        }
        System.out.println("CONSUMED " + got);
        System.exit(got == n ? 0 : 1);
    }
}
