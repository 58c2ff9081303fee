# frozen_string_literal: true

module PassengerRs
  module_function

  # Compares a connect password in a time that does not depend on where the strings differ,
  # so that a local client cannot guess it byte by byte.
  def secure_compare(a, b)
    return false unless a && b && a.bytesize == b.bytesize

    diff = 0
    a.bytes.zip(b.bytes) { |x, y| diff |= x ^ y }
    diff.zero?
  end
end
