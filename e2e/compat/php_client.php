<?php
// phpredis, with its default settings, doing what a user does first against the proxy.
// Usage: php php_client.php PORT PREFIX. Prints its results as JSON (see
// e2e/test_clients.py), waits for a line on stdin (the proxy restarts meanwhile), reads once
// more and prints that too.
[, $port, $prefix] = $argv;
$key = fn(string $name): string => "$prefix:$name";
$names = array_map(fn(int $index): string => $key("p$index"), range(0, 99));

$redis = new Redis();
$redis->connect('127.0.0.1', (int) $port);
$pipe = $redis->pipeline();
foreach ($names as $name) {
    $pipe->get($name);
}
$pipelined = $pipe->exec();
try {
    $written = $redis->set($key('written'), 'x');
    // phpredis answers false for a server error and keeps the message
    $write_error = $written === false ? $redis->getLastError() : 'no error: ' . json_encode($written);
    $redis->clearLastError();
} catch (RedisException $e) {
    $write_error = $e->getMessage();
}
$results = [
    // phpredis answers false for a missing key
    'hit' => $redis->get($key('hit')),
    'miss' => $redis->get($key('absent')),
    'mget' => $redis->mget([$key('hit'), $key('absent'), $key('p1')]),
    'pipeline' => $pipelined,
    'ping' => $redis->ping(),
    'write_error' => $write_error,
];
echo json_encode($results), "\n";
fgets(STDIN);
try {
    $after = $redis->get($key('hit'));
} catch (RedisException $e) {
    $after = 'error: ' . $e->getMessage();
}
echo json_encode(['after_restart' => $after]), "\n";
$redis->close();
