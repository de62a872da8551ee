from impala.cli import main

if __name__ == "__main__":  # a spawned child (multiprocessing) must not run the CLI again
    main()
