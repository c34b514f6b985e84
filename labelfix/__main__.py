from .cli import main

if __name__ == "__main__":  # a guard, so that processes started by spawn can import this module
    main()
