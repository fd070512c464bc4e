"""Shape rules shared by structural primitives: each checks an entry's payload and sizes and
returns what is wrong (None when nothing is). The tape validator runs a primitive's rule on
every entry of a tape that comes from outside the process, so compiled kernels can trust it."""


def payload_length(ip, n):
    if ip.size != n:
        return f"needs a payload of {n} integers, got {ip.size}"
    return None


def indices_below(ip, upper):
    if ip.size and (ip.min() < 0 or ip.max() >= upper):
        return f"index out of range [0, {upper})"
    return None


def index_map(per_output=1):
    """`per_output` operand indices per output value (an index map into the operand)."""
    def check(ip, n_out, sizes):
        return payload_length(ip, per_output * n_out) or indices_below(ip, sizes[0])
    return check


def segments(ip, n_out, sizes):
    """A segment id per operand value, each naming an output value."""
    return payload_length(ip, sizes[0]) or indices_below(ip, n_out)


def same_size(ip, n_out, sizes):
    """Operands of the output's size."""
    if any(n != n_out for n in sizes):
        return f"needs operands of the output's size {n_out}"
    return None
