# Test app for spawning: who and where the process is, what it was given, and output.
#   /            pid, parent pid, uid and gid as `key=value` lines
#   /env?NAME    the value of ENV[NAME], or `(unset)`
#   /log         prints a line on stdout and one on stderr
#   /limits      the soft and hard RLIMIT_NOFILE
#   /signals     the SigBlk and SigIgn lines of /proc/self/status
#   /fds         what each open file descriptor refers to, one `fd target` per line
$stdout.puts 'spawn app: loading' # output while loading, before the handshake completes
loaded_in = Process.pid

app = lambda do |env|
  text = case env['PATH_INFO']
         when '/'
           "pid=#{Process.pid}\nppid=#{Process.ppid}\nuid=#{Process.uid}\ngid=#{Process.gid}\nloaded_in=#{loaded_in}\n"
         when '/env'
           ENV.fetch(env['QUERY_STRING'], '(unset)')
         when '/log'
           $stdout.puts "spawn app #{Process.pid} says hello on stdout"
           $stdout.flush
           $stderr.puts "spawn app #{Process.pid} says hello on stderr"
           'logged'
         when '/limits'
           Process.getrlimit(:NOFILE).join(' ')
         when '/fds'
           Dir.children('/proc/self/fd').map { |fd| "#{fd} #{File.readlink("/proc/self/fd/#{fd}") rescue '?'}" }.join("\n")
         when '/signals'
           File.read('/proc/self/status').lines.grep(/^Sig(Blk|Ign):/).join
         else
           return [404, { 'content-type' => 'text/plain' }, ['unknown']]
         end
  [200, { 'content-type' => 'text/plain' }, [text]]
end
run app
