# Test app for tests/frameworks.rs: a Flask app (Debian's python3-flask) through nginx.
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route('/hello/<name>')
def hello(name):
    return 'hello %s from flask\n' % name, 200, {'Content-Type': 'text/plain; charset=utf-8'}


@app.route('/form', methods=['POST'])
def form():
    return ('flask got greeting=%s name=%s\n' % (request.form['greeting'], request.form['name']),
            200, {'Content-Type': 'text/plain; charset=utf-8'})


@app.route('/json')
def json_route():
    return jsonify(framework='flask', items=[1, 2, 3], query=request.args.get('q'))


@app.errorhandler(404)
def not_found(e):
    return ('flask: no route for %s\n' % request.path, 404,
            {'Content-Type': 'text/plain; charset=utf-8'})


application = app
