# Perl's Redis module (Debian libredis-perl), with its default settings, doing what a user
# does first against the proxy. Usage: perl perl_client.pl PORT PREFIX [RECONNECT]. Prints its
# results as JSON (see e2e/test_clients.py), waits for a line on stdin (the proxy restarts
# meanwhile), reads once more and prints that too. The module never reconnects unless told to
# (its `reconnect` option, in seconds; 0 by default, against Redis itself too): RECONNECT sets it.
use strict;
use warnings;
use JSON::PP;
use Redis;

my ($port, $prefix, $reconnect) = @ARGV;
my $key = sub { "$prefix:$_[0]" };
my @names = map { $key->("p$_") } 0 .. 99;

my $redis = Redis->new(server => "127.0.0.1:$port", $reconnect ? (reconnect => $reconnect) : ());
my $write_error = eval { 'no error: ' . $redis->set($key->('written'), 'x') } // $@;
$write_error =~ s/ at \S+ line \d+.*//s;
my @pipelined;
$redis->get($_, sub { push @pipelined, $_[0] }) for @names;
$redis->wait_all_responses;
my %results = (
    hit => $redis->get($key->('hit')),
    miss => $redis->get($key->('absent')),
    mget => [$redis->mget($key->('hit'), $key->('absent'), $key->('p1'))],
    pipeline => \@pipelined,
    ping => $redis->ping,
    write_error => $write_error,
);
$| = 1;
print encode_json(\%results), "\n";
<STDIN>;
my $after = eval { $redis->get($key->('hit')) } // "error: $@";
print encode_json({ after_restart => $after }), "\n";
$redis->quit;
