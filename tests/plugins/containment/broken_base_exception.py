"""broken: raises a BaseException of its own at import."""


class Boom(BaseException):
    pass


raise Boom("at import")
