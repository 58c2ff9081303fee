# Test app for tests/frameworks.rs: a Sinatra app (Debian's ruby-sinatra) through nginx.
require 'sinatra/base'
require 'json'

class FrameworkTestApp < Sinatra::Base
  get '/hello/:name' do
    content_type 'text/plain'
    "hello #{params['name']} from sinatra\n"
  end

  post '/form' do
    content_type 'text/plain'
    "sinatra got greeting=#{params['greeting']} name=#{params['name']}\n"
  end

  get '/json' do
    content_type :json
    JSON.generate(framework: 'sinatra', items: [1, 2, 3], query: params['q'])
  end

  not_found do
    content_type 'text/plain'
    "sinatra: no route for #{request.path_info}\n"
  end
end

run FrameworkTestApp
