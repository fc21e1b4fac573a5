# The ruby `redis` gem, with its default settings, doing what a user does first against the
# proxy. Usage: ruby ruby_client.rb PORT PREFIX. Prints its results as JSON (see
# e2e/test_clients.py), waits for a line on stdin (the proxy restarts meanwhile), reads once
# more and prints that too.
require "json"
require "redis"

port, prefix = Integer(ARGV[0]), ARGV[1]
key = ->(name) { "#{prefix}:#{name}" }
names = (0...100).map { |index| key.("p#{index}") }

redis = Redis.new(host: "127.0.0.1", port: port)
write_error =
  begin
    "no error: #{redis.set(key.("written"), "x").inspect}"
  rescue Redis::CommandError => e
    e.message
  end
results = {
  hit: redis.get(key.("hit")),
  miss: redis.get(key.("absent")),
  mget: redis.mget(key.("hit"), key.("absent"), key.("p1")),
  pipeline: redis.pipelined { |pipe| names.each { |name| pipe.get(name) } },
  ping: redis.ping,
  write_error: write_error,
}
puts JSON.generate(results)
$stdout.flush
$stdin.gets
puts JSON.generate({ after_restart: redis.get(key.("hit")) })
redis.close
