# frozen_string_literal: true

module PassengerRs
  module_function

  # Compares a connect password in a time that does not depend on where the strings differ,
  # so that a local client cannot guess it byte by byte.
  def secure_compare(a, b)
    return false unless a && b && a.bytesize == b.bytesize

    # Word by word (then the bytes that are left), every word looked at whatever the result.
    x = a.unpack('L*C*')
    y = b.unpack('L*C*')
    diff = 0
    i = 0
    n = x.size
    while i < n
      diff |= x[i] ^ y[i]
      i += 1
    end
    diff.zero?
  end
end
