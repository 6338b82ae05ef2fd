// Kafka's Java AdminClient (kafka-clients 4.1.1) against Strata. `single <bootstrap>`:
// topics (create, describe, delete), configs (topic: describe, incremental alter;
// broker: describe with synonyms and documentation), groups
// (list, describe, reset offsets, delete), log dirs, offsets by timestamp, delete
// records and client quotas. `cluster <bootstrap>` (three brokers): a reassignment
// and a preferred leader election. Prints one "OK <check> <detail>" line per check
// for tests/clients/test_admin_client.py to assert on; any failure throws.
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.PartitionReassignment;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class AdminCheck {
    static void ok(String check, Object detail) {
        System.out.println("OK " + check + " " + detail);
    }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        return Admin.create(p);
    }

    /** Produces n records to partition 0, with timestamps 1000 ms apart from base. */
    static void produce(String bootstrap, String topic, int n, long base) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(topic, 0, base + i * 1000L, null, "v" + i));
            }
            producer.flush();
        }
    }

    static void single(String bootstrap) throws Exception {
        String topic = "admin-" + UUID.randomUUID().toString().substring(0, 8);
        String group = "admin-group-" + UUID.randomUUID().toString().substring(0, 8);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (Admin admin = admin(bootstrap)) {
            // Topics.
            admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1)
                    .configs(Map.of("retention.ms", "7200000")))).all().get();
            TopicDescription td = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            check(td.partitions().size() == 3, "3 partitions: " + td);
            ok("describeTopics", topic + " partitions=" + td.partitions().size());

            // Configs.
            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            admin.incrementalAlterConfigs(Map.of(res, List.of(
                    new AlterConfigOp(new ConfigEntry("segment.ms", "600000"), AlterConfigOp.OpType.SET))))
                    .all().get();
            Config config = admin.describeConfigs(List.of(res)).all().get().get(res);
            check("7200000".equals(config.get("retention.ms").value()), "retention.ms: " + config);
            check("600000".equals(config.get("segment.ms").value()), "segment.ms: " + config);
            ok("describeConfigs", "retention.ms=" + config.get("retention.ms").value()
                    + " segment.ms=" + config.get("segment.ms").value());

            // The broker's configs: typed, documented, with their source; the startup
            // ones read-only, the dynamic ones changed at run time and described so.
            ConfigResource br = new ConfigResource(ConfigResource.Type.BROKER, "1");
            DescribeConfigsOptions full =
                    new DescribeConfigsOptions().includeSynonyms(true).includeDocumentation(true);
            Config bc = admin.describeConfigs(List.of(br), full).all().get().get(br);
            ConfigEntry retention = bc.get("log.retention.ms");
            check(!retention.isReadOnly() && bc.get("num.partitions").isReadOnly()
                    && retention.documentation().contains("STRATA_LOG_RETENTION_MS"),
                    "broker config: " + retention);
            admin.incrementalAlterConfigs(Map.of(br, List.of(new AlterConfigOp(
                    new ConfigEntry("log.retention.ms", "7200000"), AlterConfigOp.OpType.SET))))
                    .all().get();
            ConfigEntry changed = admin.describeConfigs(List.of(br), full).all().get().get(br)
                    .get("log.retention.ms");
            check(changed.value().equals("7200000")
                    && changed.source() == ConfigEntry.ConfigSource.DYNAMIC_BROKER_CONFIG,
                    "dynamic broker config: " + changed);
            admin.incrementalAlterConfigs(Map.of(br, List.of(new AlterConfigOp(
                    new ConfigEntry("log.retention.ms", ""), AlterConfigOp.OpType.DELETE))))
                    .all().get();
            ok("describeBrokerConfigs", "log.retention.ms type=" + retention.type() + " source="
                    + retention.source() + " synonyms=" + retention.synonyms().size());

            // Records 0..9 with timestamps base, base+1s, ...
            long base = System.currentTimeMillis() - 60_000;
            produce(bootstrap, topic, 10, base);

            // Offsets by timestamp: the first record at or after base + 3.5 s is offset 4.
            long at = admin.listOffsets(Map.of(tp, OffsetSpec.forTimestamp(base + 3500))).all().get()
                    .get(tp).offset();
            check(at == 4, "offset by time: " + at);
            long end = admin.listOffsets(Map.of(tp, OffsetSpec.latest())).all().get().get(tp).offset();
            ok("listOffsets", "forTimestamp=" + at + " latest=" + end);

            // Groups: a consumer commits, the group is listed and described, its offsets reset.
            Properties c = new Properties();
            c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
                consumer.subscribe(List.of(topic));
                int seen = 0;
                long deadline = System.currentTimeMillis() + 30_000;
                while (seen < 10 && System.currentTimeMillis() < deadline) {
                    seen += consumer.poll(Duration.ofMillis(500)).count();
                }
                check(seen == 10, "consumed " + seen);
                consumer.commitSync();
            }
            Collection<GroupListing> groups = admin.listGroups().all().get();
            check(groups.stream().anyMatch(g -> g.groupId().equals(group)), "listed: " + groups);
            ConsumerGroupDescription gd = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
            ok("describeConsumerGroups", group + " state=" + gd.groupState() + " members=" + gd.members().size());
            admin.alterConsumerGroupOffsets(group, Map.of(tp, new OffsetAndMetadata(2))).all().get();
            long committed = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                    .get(tp).offset();
            check(committed == 2, "reset to " + committed);
            ok("alterConsumerGroupOffsets", "offset=" + committed);
            admin.deleteConsumerGroups(List.of(group)).all().get();
            Collection<GroupListing> after = admin.listGroups().all().get();
            check(after.stream().noneMatch(g -> g.groupId().equals(group)), "deleted: " + after);
            ok("deleteConsumerGroups", group);

            // Log dirs: the partition's bytes on broker 1.
            Map<String, LogDirDescription> dirs = admin.describeLogDirs(List.of(1)).allDescriptions().get().get(1);
            long size = dirs.values().stream()
                    .filter(d -> d.replicaInfos().containsKey(tp))
                    .mapToLong(d -> d.replicaInfos().get(tp).size()).sum();
            check(size > 0, "log dir size of " + tp + ": " + dirs);
            ok("describeLogDirs", tp + " size>0");

            // Delete records below offset 5.
            long low = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(5))).lowWatermarks()
                    .get(tp).get().lowWatermark();
            check(low == 5, "low watermark " + low);
            long earliest = admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).all().get().get(tp).offset();
            check(earliest == 5, "earliest after delete " + earliest);
            ok("deleteRecords", "lowWatermark=" + low);

            // Client quotas.
            ClientQuotaEntity entity = new ClientQuotaEntity(Map.of(ClientQuotaEntity.CLIENT_ID, "java-app"));
            admin.alterClientQuotas(List.of(new ClientQuotaAlteration(entity, List.of(
                    new ClientQuotaAlteration.Op("producer_byte_rate", 1048576.0),
                    new ClientQuotaAlteration.Op("request_percentage", 25.0))))).all().get();
            Map<ClientQuotaEntity, Map<String, Double>> quotas = admin.describeClientQuotas(
                    ClientQuotaFilter.containsOnly(List.of(
                            ClientQuotaFilterComponent.ofEntity(ClientQuotaEntity.CLIENT_ID, "java-app"))))
                    .entities().get();
            check(Map.of("producer_byte_rate", 1048576.0, "request_percentage", 25.0).equals(quotas.get(entity)),
                    "quotas: " + quotas);
            admin.alterClientQuotas(List.of(new ClientQuotaAlteration(entity, List.of(
                    new ClientQuotaAlteration.Op("producer_byte_rate", null),
                    new ClientQuotaAlteration.Op("request_percentage", null))))).all().get();
            check(admin.describeClientQuotas(ClientQuotaFilter.all()).entities().get().isEmpty(), "quotas removed");
            ok("clientQuotas", "set, described, removed");

            admin.deleteTopics(List.of(topic)).all().get();
            long deadline = System.currentTimeMillis() + 30_000;
            while (admin.listTopics().names().get().contains(topic) && System.currentTimeMillis() < deadline) {
                Thread.sleep(200);
            }
            check(!admin.listTopics().names().get().contains(topic), "topic deleted");
            ok("deleteTopics", topic);
        }
    }

    static void cluster(String bootstrap) throws Exception {
        String topic = "admin-move-" + UUID.randomUUID().toString().substring(0, 8);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (Admin admin = admin(bootstrap)) {
            admin.createTopics(List.of(new NewTopic(topic, Map.of(0, List.of(1, 2)))))
                    .all().get();
            produce(bootstrap, topic, 20, System.currentTimeMillis());
            admin.alterPartitionReassignments(Map.of(tp, Optional.of(new NewPartitionReassignment(List.of(3, 2)))))
                    .all().get();
            long deadline = System.currentTimeMillis() + 60_000;
            List<Integer> replicas = List.of();
            while (System.currentTimeMillis() < deadline) {
                Map<TopicPartition, PartitionReassignment> ongoing =
                        admin.listPartitionReassignments(Set.of(tp)).reassignments().get();
                TopicDescription td = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
                replicas = td.partitions().get(0).replicas().stream().map(n -> n.id()).collect(Collectors.toList());
                if (ongoing.isEmpty() && replicas.equals(List.of(3, 2))) break;
                Thread.sleep(250);
            }
            check(replicas.equals(List.of(3, 2)), "replicas after the move: " + replicas);
            ok("alterPartitionReassignments", tp + " replicas=" + replicas);
            // The preferred leader is 3 now; elect it (or it already leads).
            deadline = System.currentTimeMillis() + 30_000;
            int leader = -1;
            while (System.currentTimeMillis() < deadline) {
                Map<TopicPartition, Optional<Throwable>> r =
                        admin.electLeaders(ElectionType.PREFERRED, Set.of(tp)).partitions().get();
                leader = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic)
                        .partitions().get(0).leader().id();
                if (leader == 3) {
                    ok("electLeaders", tp + " leader=" + leader + " result="
                            + r.get(tp).map(e -> e.getClass().getSimpleName()).orElse("elected"));
                    break;
                }
                Thread.sleep(500);
            }
            check(leader == 3, "preferred leader 3, got " + leader);
            admin.deleteTopics(List.of(topic)).all().get();
        }
    }

    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "single" -> single(args[1]);
            case "cluster" -> cluster(args[1]);
            default -> throw new IllegalArgumentException("unknown mode " + args[0]);
        }
    }
}
